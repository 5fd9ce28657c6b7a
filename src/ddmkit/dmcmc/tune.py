"""Grid search of DLG settings (eta, n_skip, integrator steps) within an NFE budget: `ddmkit tune-dmcmc`.

For each integrator the budget `target_nfe` is split between the chain (n_skip) and the integrator
(steps), NFE per output = n_skip + NFE_int(steps) + 1 (Tweedie): n_skip takes a few shares of the budget
and the integrator gets the most steps that fit the rest (KAR: 2N - 3; RD/EM/PF/DDIM: N; RK45 cannot
be budgeted, its NFE is measured and rows over budget are marked). Each setting is crossed with the
eta grid, sampled, and scored by the domain metric:

- mixtures (gmm:): Frechet distance of the samples to the exact mixture (`frechet_to_mixture`);
- images with a known domain (faces / digits): FD from `ddmkit.metrics.evaluate.evaluate_images`.

Lower is better. The plain integrator (no DLG) at the same budget is scored too, for reference.
The table (JSON) is rewritten after every row, so an interrupted search resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..denoisers import Denoiser, unwrap
from ..errors import DdmkitError
from ..integrators import INTEGRATORS, get_integrator
from ..io import atomic_write_json
from ..mixtures import GMMDenoiser
from ..sampling import sample
from .noise_classifier import NoiseLevelClassifier
from .dlg import DLGConfig, dlg_sample

DEFAULT_ETAS = (0.05, 0.2, 0.8)
DEFAULT_SKIP_SHARES = (0.2, 0.4, 0.6)


def integrator_nfe(integrator: str, steps: int) -> int | None:
    """NFE of one integration with `steps` (the spec's N); None for rk45 (adaptive)."""
    return get_integrator(integrator).nfe(steps)


def max_steps(integrator: str, budget: int) -> int | None:
    """The largest N whose integrator NFE fits `budget` (None if none does)."""
    return get_integrator(integrator).max_steps(budget)


def settings_grid(target_nfe: int, integrators: Sequence[str], etas: Sequence[float],
                  skip_shares: Sequence[float] = DEFAULT_SKIP_SHARES) -> list[dict]:
    rows = []
    for integ in integrators:
        splits = set()
        for share in skip_shares:
            n_skip = max(1, int(round(share * target_nfe)))
            steps = max_steps(integ, target_nfe - n_skip - 1)
            if steps is not None:
                splits.add((n_skip, steps))
        for n_skip, steps in sorted(splits):
            for eta in etas:
                rows.append({"integrator": integ, "dlg": True, "eta": float(eta), "n_skip": n_skip, "steps": steps})
    return rows


def default_metric(denoiser: Denoiser) -> tuple[str, Callable[[torch.Tensor], float]]:
    """(name, function of the samples) for the model's domain; lower is better."""
    inner = unwrap(denoiser)
    if isinstance(inner, GMMDenoiser):
        from ..mixtures import frechet_to_mixture

        return "frechet_to_mixture", lambda x: frechet_to_mixture(x, inner.mixture)
    domain = inner.domain
    if domain in ("faces", "digits"):
        def fd(x: torch.Tensor) -> float:
            from ..metrics.evaluate import evaluate_images, to_metric_range

            x = to_metric_range(x.numpy(), inner.data_range)  # e.g. a VE model's [0, 1] samples
            return float(evaluate_images(x, domain, with_noise_floor=False)["fd"])

        return f"fd_{domain}", fd
    raise DdmkitError("tune-dmcmc scores samples with a domain metric: use a gmm: model or the faces/digits models")


def _key(row: dict) -> tuple:
    return (row["integrator"], row["dlg"], row.get("eta"), row.get("n_skip"), row["steps"])


def tune_dmcmc(
    denoiser: Denoiser,
    classifier: NoiseLevelClassifier,
    target_nfe: int,
    *,
    integrators: Sequence[str] = tuple(INTEGRATORS),
    etas: Sequence[float] = DEFAULT_ETAS,
    skip_shares: Sequence[float] = DEFAULT_SKIP_SHARES,
    num: int = 1000,
    chains: int = 100,
    seed: int = 0,
    metric: tuple[str, Callable[[torch.Tensor], float]] | None = None,
    out: str | Path | None = None,
    header: dict | None = None,
    progress: bool = True,
) -> dict:
    """Score every setting of the grid (module docstring); returns {rows, best, best_plain, ...}."""
    if target_nfe < 3:
        raise DdmkitError(f"--target-nfe must be >= 3 (n_skip + integrator + Tweedie), got {target_nfe}")
    for i in integrators:
        if i not in INTEGRATORS:
            raise DdmkitError(f"unknown integrator {i!r}; choose from {', '.join(INTEGRATORS)}")
    if not etas or any(not (math.isfinite(e) and e > 0) for e in etas):
        raise DdmkitError("--etas must be positive numbers")
    if not skip_shares or any(not (math.isfinite(s) and 0 < s < 1) for s in skip_shares):
        raise DdmkitError(f"--skip-shares must be numbers in (0, 1), got {', '.join(map(str, skip_shares))}")
    name, fn = metric or default_metric(denoiser)
    grid = settings_grid(target_nfe, integrators, etas, skip_shares)
    for integ in integrators:  # plain baselines at the same budget
        steps = max_steps(integ, target_nfe - 1)
        if steps is not None:
            grid.append({"integrator": integ, "dlg": False, "eta": None, "n_skip": None, "steps": steps})
    table = {**(header or {}), "target_nfe": target_nfe, "metric": name, "lower_is_better": True, "num": num,
             "chains": chains, "seed": seed, "rows": []}
    if out is not None and Path(out).is_file():
        old = json.loads(Path(out).read_text())
        same = all(old.get(k) == table.get(k) for k in ("target_nfe", "metric", "num", "chains", "seed", "model"))
        if same:
            table["rows"] = old.get("rows", [])
    done = {_key(r) for r in table["rows"]}
    from tqdm.auto import tqdm

    for row in tqdm(grid, disable=not progress, desc="tune-dmcmc"):
        if _key(row) in done:
            continue
        t0 = time.time()
        try:
            if row["dlg"]:
                cfg = DLGConfig(integrator=row["integrator"], steps=row["steps"], eta=row["eta"], n_skip=row["n_skip"])
                res = dlg_sample(denoiser, classifier, cfg, num=num, chains=chains, seed=seed, report=lambda m: None)
                x, nfe = res.x, res.nfe["per_output"]
                extra = {"nfe_with_burn_in": res.nfe["per_output_with_burn_in"], "divergences": len(res.events)}
            else:
                res = sample(denoiser, integrator=row["integrator"], steps=row["steps"], num=num, seed=seed, batch_size=max(chains, 1))
                x, nfe, extra = res.x, res.nfe_per_sample, {}
            value = float(fn(x))
            result = {**row, "nfe": nfe, **extra, "metric": value, "within_budget": nfe <= target_nfe}
        except DdmkitError as e:
            result = {**row, "nfe": None, "metric": None, "error": str(e), "within_budget": False}
        result["seconds"] = round(time.time() - t0, 2)
        table["rows"].append(result)
        _finish(table)
        if out is not None:
            atomic_write_json(out, table)
    _finish(table)
    if out is not None:
        atomic_write_json(out, table)
    return table


def _finish(table: dict) -> None:
    ok = [r for r in table["rows"] if r.get("metric") is not None and r.get("within_budget")]
    dlg = [r for r in ok if r["dlg"]]
    plain = [r for r in ok if not r["dlg"]]
    table["best"] = min(dlg, key=lambda r: r["metric"]) if dlg else None
    table["best_plain"] = min(plain, key=lambda r: r["metric"]) if plain else None
