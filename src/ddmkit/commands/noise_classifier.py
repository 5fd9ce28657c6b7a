"""`ddmkit noise-classifier`: train and evaluate the noise-level classifier of Denoising MCMC."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DdmkitError
from ..provenance import provenance
from .argtypes import MAX_BATCH, float_range, int_range, path_text, seed
from .common import model_input_paths, run_lock


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "noise-classifier",
        help="train / evaluate the noise-level classifier that DLG (sample --dmcmc) needs",
        description="The noise-level classifier q(k|x) predicts which of K geometric noise levels over the "
        "model's own [sigma_min, sigma_max] produced x = x0 + sigma_k eps. `train` writes PATH.safetensors + "
        "PATH.json (metadata with the held-out top-1 accuracy and mean |delta log sigma|); `evaluate` "
        "re-measures a file against a model.",
        epilog="example: ddmkit noise-classifier train --model gmm:mix.json --out runs/mix_noise_classifier",
    )
    s = p.add_subparsers(dest="action", metavar="ACTION")
    t = s.add_parser(
        "train",
        help="train a classifier for a model (resumable; progress bar, checkpoints)",
        description="Train on x0 + sigma_k eps, k uniform over K levels (Adam, cross-entropy). Clean data x0: "
        "exact samples for gmm: models (no --data), the synthetic faces for the default model, the digits for "
        "'digits', or --data FOLDER of images. Checkpoints go to OUT.ckpt/; running the same command again "
        "resumes. Input normalisation (stored in the metadata, identical at sampling): the data range mapped "
        "to [-1, 1], then x / rms(x) with log rms(x) as an extra input (--input-norm rms) or the raw state (none).",
        epilog="example: ddmkit noise-classifier train --model default --out runs/faces_noise_classifier --max-minutes 15",
    )
    t.add_argument("--model", default="default", type=path_text, help="'default', 'digits', gmm:PATH.json or a diffusers folder")
    t.add_argument("--data", default=None, help="clean data: 'faces', 'digits' or an image folder (default: the model's own)")
    t.add_argument("--out", required=True, type=path_text,
                   help="output path (writes OUT.safetensors and OUT.json; checkpoints in OUT.ckpt/)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing OUT.safetensors / OUT.json")
    t.add_argument("--k", type=int_range(2, 100_000), default=1000, help="number of noise levels K (default 1000, the paper's)")
    t.add_argument("--steps", type=int_range(1, 100_000_000), default=None,
                   help="optimizer steps (default: 3000 for images, 20000 for vector data such as gmm: mixtures)")
    t.add_argument("--batch-size", type=int_range(1, MAX_BATCH), default=100, help="default 100, the paper's")
    t.add_argument("--lr", type=float_range(0, 1, low_open=True), default=1e-3,
                   help="Adam learning rate (default 1e-3, the paper's)")
    t.add_argument("--lr-schedule", choices=("cosine", "constant"), default="cosine")
    t.add_argument("--input-norm", choices=("rms", "raw+logrms", "none"), default="rms")
    t.add_argument("--channels", default="32,64,128,256",
                   help="widths of the four conv layers for images (default: 32,64,128,256, the paper's)")
    t.add_argument("--seed", type=seed, default=0)
    t.add_argument("--checkpoint-every", type=int_range(1, 100_000_000), default=200)
    t.add_argument("--max-minutes", type=float_range(0), default=0.0, help="stop after this much training time and write the file (0: no limit)")
    t.add_argument("--threads", type=int_range(0, 1024), default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--quiet", action="store_true")
    e = s.add_parser("evaluate", help="held-out accuracy and mean |delta log sigma| of a classifier file",
                     epilog="example: ddmkit noise-classifier evaluate --model gmm:mix.json --classifier runs/mix_noise_classifier")
    e.add_argument("--model", default="default")
    e.add_argument("--classifier", required=True, help="PATH of PATH.safetensors + PATH.json")
    e.add_argument("--data", default=None)
    e.add_argument("--seed", type=seed, default=1)
    p.set_defaults(func=lambda a: _dispatch(a, p))


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.action == "train":
        return run_train(args)
    if args.action == "evaluate":
        return run_evaluate(args)
    parser.print_help()
    return 2


def _channels(text: str) -> tuple[int, ...]:
    try:
        ch = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise DdmkitError(f"--channels must be comma-separated integers, got {text!r}") from None
    if len(ch) != 4 or min(ch) < 1:
        raise DdmkitError(f"--channels needs four positive widths (one per conv layer), got {text!r}")
    return ch


def claim_outputs(args: argparse.Namespace) -> Path:
    """OUT.safetensors / OUT.json are new (or --overwrite) and never the model or data file; an
    unfinished run's OUT.ckpt/ is resumed."""
    from ..dmcmc.noise_classifier import paths_for
    from ..output_guard import claim_files, refuse_inputs

    wpath, mpath = paths_for(args.out)
    ckpt = wpath.with_name(wpath.name.replace(".safetensors", ".ckpt"))
    inputs = model_input_paths(args.model) + ([Path(args.data)] if args.data and Path(args.data).exists() else [])
    refuse_inputs([ckpt], inputs)
    claim_files([wpath, mpath], overwrite=args.overwrite, inputs=inputs)
    return wpath


def run_train(args: argparse.Namespace) -> int:
    from ..dmcmc.classifier_training import ClassifierTrainConfig

    cfg = ClassifierTrainConfig(k=args.k, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                lr_schedule=args.lr_schedule, seed=args.seed, input_norm=args.input_norm,
                                checkpoint_every=args.checkpoint_every, threads=args.threads, max_minutes=args.max_minutes,
                                channels=_channels(args.channels))
    cfg.validate()
    wpath = claim_outputs(args)
    with run_lock(wpath):
        claim_outputs(args)  # again under the lock
        return _train(args, cfg)


def _train(args: argparse.Namespace, cfg) -> int:
    from ..dmcmc.classifier_data import data_for_model, model_facts
    from ..dmcmc.noise_classifier import paths_for
    from ..dmcmc.classifier_training import train_noise_classifier

    facts = model_facts(args.model)
    data = data_for_model(facts, args.data, args.seed)
    meta = {"model": args.model, "provenance": provenance(args.command_line), "model_identity": facts.identity, "domain": data.domain or facts.domain,
            "sample_shape": list(facts.sample_shape), "data_range": list(facts.data_range) if facts.data_range else None}
    meta = train_noise_classifier(data, facts.sample_shape, facts.data_range, facts.sigma_min, facts.sigma_max,
                                  args.out, cfg, meta=meta, progress=not args.quiet)
    h = meta["held_out"]
    print(f"held-out top-1 accuracy {h['top1_accuracy']:.3f}, mean |dlog sigma| {h['mean_abs_dlog_sigma']:.3f} "
          f"(median {h['median_abs_dlog_sigma']:.3f}; grid spacing {h['grid_log_spacing']:.4f}) -> {paths_for(args.out)[0]}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..dmcmc.noise_classifier import check_compatible, load_classifier
    from ..dmcmc.classifier_data import data_for_model
    from ..dmcmc.classifier_training import evaluate_classifier
    from ..models.loading import load_model, model_identity

    den = load_model(args.model)
    clf = load_classifier(args.classifier)
    check_compatible(clf, den, model_identity(den), path=args.classifier)
    data = data_for_model(den, args.data, args.seed)
    metrics = evaluate_classifier(clf.net, clf.grid, data.held_out, seed=args.seed + 777)
    print(json.dumps(metrics, indent=2))
    return 0
