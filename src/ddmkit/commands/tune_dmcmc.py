"""`ddmkit tune-dmcmc`: search DLG settings within a total NFE budget, checked on other seeds against the best plain integrator."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..provenance import provenance
from ..errors import DdmkitError
from .argtypes import MAX_NUM, float_list, float_range, int_list, int_range, path_text, seed
from .common import model_input_paths, resolve_device, run_lock


def register(sub: argparse._SubParsersAction) -> None:
    from ..dmcmc.tune import BUDGETABLE, DEFAULT_ETAS, DEFAULT_OUTPUTS_PER_CHAIN, DEFAULT_SCORE_SEEDS, DEFAULT_SKIP_SHARES

    p = sub.add_parser(
        "tune-dmcmc",
        help="search DLG settings (eta, n_skip, steps, outputs per chain) within a total NFE budget, checked on "
             "other seeds against the best plain integrator",
        description="Total NFE per output = n_skip + integrator + 1 (Tweedie) + the burn-in amortised over the outputs "
        "of a chain. For each outputs-per-chain value and integrator, split the budget between the chain (n_skip = a "
        "share of it) and the integrator (the most steps that fit), cross with the eta grid, sample on --seed and "
        "score: Frechet distance to the exact mixture for gmm: models, FD-faces / FD-digits for the shipped models, "
        "FID against --ref / --ref-stats for any image model. Every plain integrator at the same budget is scored "
        "too. The best DLG and plain settings are re-run on --score-seeds (never seen by the search) and the table "
        "says whether DLG helps. Writes a JSON table whose 'settings' `ddmkit sample --dmcmc --settings TABLE` reads; "
        "rerunning resumes it.",
        epilog="example: ddmkit tune-dmcmc --model gmm:mix.json --noise-classifier runs/mix_clf --target-nfe 20 "
        "--out tune.json && ddmkit sample --dmcmc --model gmm:mix.json --noise-classifier runs/mix_clf --settings "
        "tune.json --num 1000 --out runs/dlg",
    )
    p.add_argument("--model", default="default", type=path_text, help="'default', 'digits', gmm:PATH.json or a diffusers folder")
    p.add_argument("--target-nfe", type=float_range(1, 100_000), required=True,
                   help="total NFE per output: n_skip + integrator + 1 + burn-in / outputs per chain")
    p.add_argument("--noise-classifier", metavar="PATH", default=None, type=path_text, help="PATH, or 'oracle' for a gmm: model (default: the one shipped for the model)")
    p.add_argument("--integrators", default=",".join(BUDGETABLE),
                   help=f"comma-separated (default {','.join(BUDGETABLE)}; rk45's NFE is not budgetable)")
    p.add_argument("--etas", type=float_list(0, 100, low_open=True), default=DEFAULT_ETAS, help=f"DLG etas in [0,1]-data units (default {','.join(map(str, DEFAULT_ETAS))})")
    p.add_argument("--skip-shares", type=float_list(0, 1, low_open=True, high_open=True), default=DEFAULT_SKIP_SHARES,
                   help="shares of the per-output budget given to n_skip, each in (0, 1) (default 0.2,0.4,0.6)")
    p.add_argument("--outputs-per-chain", type=int_list(1, MAX_NUM), default=DEFAULT_OUTPUTS_PER_CHAIN,
                   help="outputs per chain to try, comma-separated (the burn-in is amortised over them; default "
                        f"{','.join(map(str, DEFAULT_OUTPUTS_PER_CHAIN))})")
    p.add_argument("--burn-ins", default="auto",
                   help="burn-ins to try, separated by ';': auto, cifar10, celebahq or KAR2_STEPS:PERTURB:N1@ETA1,N2@eta "
                        "(e.g. 'auto;20:0.1:10@0.5,10@eta': a smaller perturbation; default auto)")
    p.add_argument("--num", type=int_range(2, MAX_NUM), default=1000, help="samples per setting (default 1000)")
    p.add_argument("--seed", type=seed, default=0, help="the seed the search runs on (default 0)")
    p.add_argument("--score-seeds", type=int_list(0, 2**63 - 1), default=DEFAULT_SCORE_SEEDS,
                   help="seeds the winners are re-scored on, other than --seed (default 1,2,3)")
    p.add_argument("--ref", metavar="FOLDER", default=None, type=path_text,
                   help="score by FID against this folder of images (any image model)")
    p.add_argument("--ref-stats", metavar="FILE", default=None, type=path_text,
                   help="score by FID against a pytorch-fid statistics file (.npz of mu, sigma)")
    p.add_argument("--inception-weights", metavar="FILE", default=None, type=path_text,
                   help="Inception weights for --ref / --ref-stats (as `ddmkit evaluate --fid`)")
    p.add_argument("--out", required=True, type=path_text, help="JSON table to write (an earlier table is resumed)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out file that is not a tune-dmcmc table")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def claim_table(args: argparse.Namespace) -> Path:
    from ..output_guard import claim_files, json_file_says

    inputs = model_input_paths(args.model) + [Path(p) for p in (args.noise_classifier, args.ref, args.ref_stats) if p]
    owned = lambda p: json_file_says(p, target_nfe=None, rows=None)  # noqa: E731 - an earlier table: resumed
    return claim_files([args.out], overwrite=args.overwrite, inputs=inputs, owned=owned)[0]


def search_space(args: argparse.Namespace):
    from ..dmcmc.tune import TuneSpace

    if args.ref and args.ref_stats:
        raise DdmkitError("give one reference: --ref FOLDER or --ref-stats FILE")
    if args.ref and not Path(args.ref).is_dir():
        raise DdmkitError(f"--ref {args.ref} is not a folder of images; give the reference images' folder")
    if args.ref_stats and not Path(args.ref_stats).is_file():
        raise DdmkitError(f"--ref-stats {args.ref_stats} does not exist; write one with "
                          "`ddmkit evaluate DIR --save-stats FILE.npz`")
    if args.inception_weights and not (args.ref or args.ref_stats):
        raise DdmkitError("--inception-weights is for FID against --ref / --ref-stats; add one of them")
    if args.seed in args.score_seeds:
        raise DdmkitError(f"--score-seeds must differ from the tuning --seed {args.seed} (scoring on the seed the "
                          "search chose on would flatter the winner)")
    space = TuneSpace(integrators=tuple(i.strip() for i in args.integrators.split(",") if i.strip()),
                      etas=tuple(args.etas), skip_shares=tuple(args.skip_shares),
                      outputs_per_chain=tuple(int(k) for k in args.outputs_per_chain),
                      burn_ins=tuple(b.strip() for b in args.burn_ins.split(";") if b.strip()))
    space.validate()
    return space


def run(args: argparse.Namespace) -> int:
    space = search_space(args)
    out = claim_table(args)
    with run_lock(out):
        claim_table(args)  # again under the lock
        return _tune(args, space)


def _tune(args: argparse.Namespace, space) -> int:
    from ..dmcmc.run import file_sha256, resolve_classifier
    from ..dmcmc.tune import fid_metric, tune_dmcmc
    from ..models.loading import load_model, model_identity

    device = resolve_device(args.device)
    den = load_model(args.model, device=device)
    identity = model_identity(den)
    clf, clf_path = resolve_classifier(args.noise_classifier, args.model, den, identity, device=device)
    ref = args.ref or args.ref_stats
    metric = fid_metric(den, ref, args.inception_weights, device) if ref else None
    header = {"model": args.model, "model_identity": identity, "noise_classifier": clf_path,
              "noise_classifier_sha256": None if clf_path == "oracle" else file_sha256(clf_path),
              "reference": ref, "provenance": provenance(args.command_line)}
    table = tune_dmcmc(den, clf, args.target_nfe, space=space, num=args.num, seed=args.seed,
                       score_seeds=tuple(args.score_seeds), metric=metric, out=args.out, header=header,
                       progress=not args.quiet)
    best = table["best"]
    if best is None:
        print(f"no DLG setting fits {args.target_nfe:g} total NFE; table -> {args.out}")
        return 0
    print(f"best DLG on seed {args.seed}: {best['integrator']} steps={best['steps']} n_skip={best['n_skip']} "
          f"eta={best['eta']:g}, {best['outputs_per_chain']} outputs per chain -> {table['metric']} "
          f"{best['metric']:.4g} at {best['nfe']:.3g} total NFE")
    print(f"{table['verdict']['text']}; table and settings -> {args.out} (ddmkit sample --dmcmc --settings {args.out})")
    return 0
