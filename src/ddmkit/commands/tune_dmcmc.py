"""`ddmkit tune-dmcmc`: grid search of DLG settings (eta, n_skip, steps) within an NFE budget."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..provenance import provenance
from .argtypes import MAX_BATCH, MAX_NUM, float_list, int_range, path_text, seed
from .common import model_input_paths, resolve_device, run_lock


def register(sub: argparse._SubParsersAction) -> None:
    from ..dmcmc.tune import DEFAULT_ETAS, DEFAULT_SKIP_SHARES

    p = sub.add_parser(
        "tune-dmcmc",
        help="grid-search DLG settings (eta, n_skip, steps) within a target NFE, scored by the domain metric",
        description="For each integrator, split the budget --target-nfe between the chain (n_skip = a share of it) "
        "and the integrator (the most steps that fit), cross with the eta grid, sample, and score: Frechet distance "
        "to the exact mixture for gmm: models, FD-faces / FD-digits for the shipped models. Also scores the plain "
        "integrator at the same budget. Writes a JSON table of every setting and the best; rerunning resumes it.",
        epilog="example: ddmkit tune-dmcmc --model gmm:mix.json --noise-classifier runs/mix_clf --target-nfe 20 --out tune.json",
    )
    p.add_argument("--model", default="default", type=path_text, help="'default', 'digits', gmm:PATH.json or a diffusers folder")
    p.add_argument("--target-nfe", type=int_range(3, 100_000), required=True, help="NFE per sample: n_skip + integrator + 1")
    p.add_argument("--noise-classifier", metavar="PATH", default=None, type=path_text, help="PATH, or 'oracle' for a gmm: model (default: the one shipped for the model)")
    p.add_argument("--integrators", default="kar1,kar2,rd,em,pf,ddim",
                   help="comma-separated (default kar1,kar2,rd,em,pf,ddim; rk45's NFE is not budgetable)")
    p.add_argument("--etas", type=float_list(0, 100, low_open=True), default=DEFAULT_ETAS, help=f"DLG etas in [0,1]-data units (default {','.join(map(str, DEFAULT_ETAS))})")
    p.add_argument("--skip-shares", type=float_list(0, 1, low_open=True, high_open=True), default=DEFAULT_SKIP_SHARES,
                   help="shares of the budget given to n_skip, each in (0, 1) (default 0.2,0.4,0.6)")
    p.add_argument("--num", type=int_range(2, MAX_NUM), default=1000, help="samples per setting (default 1000)")
    p.add_argument("--chains", type=int_range(1, MAX_BATCH), default=100, help="DLG chains (default 100)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", required=True, type=path_text, help="JSON table to write (an earlier table is resumed)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out file that is not a tune-dmcmc table")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def claim_table(args: argparse.Namespace) -> Path:
    from ..output_guard import claim_files, json_file_says

    inputs = model_input_paths(args.model) + ([Path(args.noise_classifier)] if args.noise_classifier else [])
    owned = lambda p: json_file_says(p, target_nfe=None, rows=None)  # noqa: E731 - an earlier table: resumed
    return claim_files([args.out], overwrite=args.overwrite, inputs=inputs, owned=owned)[0]


def run(args: argparse.Namespace) -> int:
    out = claim_table(args)
    with run_lock(out):
        claim_table(args)  # again under the lock
        return _tune(args)


def _tune(args: argparse.Namespace) -> int:
    from ..dmcmc.run import resolve_classifier
    from ..dmcmc.tune import tune_dmcmc
    from ..models.loading import load_model, model_identity

    integrators = tuple(i.strip() for i in args.integrators.split(",") if i.strip())
    device = resolve_device(args.device)
    den = load_model(args.model, device=device)
    identity = model_identity(den)
    clf, clf_path = resolve_classifier(args.noise_classifier, args.model, den, identity, device=device)
    table = tune_dmcmc(den, clf, args.target_nfe, integrators=integrators, etas=args.etas, skip_shares=args.skip_shares,
                       num=args.num, chains=args.chains, seed=args.seed, out=args.out,
                       header={"model": args.model, "model_identity": identity, "noise_classifier": clf_path,
                               "provenance": provenance(args.command_line)},
                       progress=not args.quiet)
    best = table["best"]
    if best is None:
        print(f"no DLG setting fits {args.target_nfe} NFE; table -> {args.out}")
        return 0
    plain = table.get("best_plain")
    ref = f" (best plain: {plain['integrator']} {plain['metric']:.4g})" if plain else ""
    print(f"best: {best['integrator']} steps={best['steps']} n_skip={best['n_skip']} eta={best['eta']:g} "
          f"-> {table['metric']} {best['metric']:.4g} at {best['nfe']:g} NFE{ref}; table -> {args.out}")
    return 0
