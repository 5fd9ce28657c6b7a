"""Search of DLG settings within a *total* NFE budget, checked on other seeds: `ddmkit tune-dmcmc`.

Total NFE per output = n_skip (Langevin) + NFE_int(steps) + 1 (Tweedie) + the burn-in amortised over the
outputs of a chain (burn-in NFE / outputs_per_chain; the burn-in's NFE is measured once on one chain).
For each outputs-per-chain value and integrator, n_skip takes a few shares of what is left after the
burn-in and the integrator gets the most steps that fit the rest; each split is crossed with the eta
grid, sampled on the tuning seed and scored by the metric (lower is better):

- mixtures (gmm:): Frechet distance of the samples to the exact mixture (`frechet_to_mixture`);
- the shipped image domains (faces / digits): FD from `ddmkit.metrics.evaluate.evaluate_images`;
- any image model with a reference set: FID against a folder of images or a pytorch-fid stats file
  (`fid_metric`).

Every plain integrator at the same total budget is scored too. The best DLG row and the best plain row
(chosen on the tuning seed) are then re-run on `score_seeds`, which the search never saw: the table's
"verdict" compares them there, mean and spread, and says plainly when DLG does not help. The chosen DLG
settings are written into the table ("settings", `ddmkit.dmcmc.settings_file`), which `ddmkit sample
--dmcmc --settings TABLE` reads. The table is rewritten after every row: an interrupted search resumes.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..denoisers import Denoiser, unwrap
from ..errors import DdmkitError
from ..integrators import INTEGRATORS, get_integrator
from ..io import atomic_write_json
from ..metrics.evaluate import evaluate_images, to_metric_range
from ..metrics.fid import fid_value, inception_stats, read_stats
from ..metrics.images import ImageSet, read_image_set
from ..metrics.inception import load_extractor
from ..mixtures import GMMDenoiser, frechet_to_mixture
from ..sampling import sample
from .diagnostics import output_mixing
from .dlg import DLGConfig, DLGSampler, dlg_sample, parse_burn_in
from .noise_classifier import NoiseLevelClassifier
from .settings_file import DLGSettings

DEFAULT_ETAS = (0.05, 0.2, 0.8)
DEFAULT_SKIP_SHARES = (0.2, 0.4, 0.6)
DEFAULT_OUTPUTS_PER_CHAIN = (50,)
DEFAULT_SCORE_SEEDS = (1, 2, 3)
BUDGETABLE = tuple(name for name, spec in INTEGRATORS.items() if spec.nfe(spec.min_steps) is not None)

Metric = tuple[str, Callable[[torch.Tensor], float]]


def integrator_nfe(integrator: str, steps: int) -> int | None:
    """NFE of one integration with `steps` (the spec's N); None for rk45 (adaptive)."""
    return get_integrator(integrator).nfe(steps)


def max_steps(integrator: str, budget: float) -> int | None:
    """The largest N whose integrator NFE fits `budget` (None if none does)."""
    return get_integrator(integrator).max_steps(int(math.floor(budget + 1e-9)))


@dataclass(frozen=True)
class TuneSpace:
    """What the search varies: integrators, DLG step sizes ([0, 1]-data units), the shares of the per-output
    budget given to n_skip, the outputs per chain (the burn-in's amortisation) and the burn-ins (presets or
    'KAR2_STEPS:PERTURB:N1@ETA1,N2@eta', `ddmkit.dmcmc.dlg.parse_burn_in`)."""

    integrators: tuple[str, ...] = BUDGETABLE
    etas: tuple[float, ...] = DEFAULT_ETAS
    skip_shares: tuple[float, ...] = DEFAULT_SKIP_SHARES
    outputs_per_chain: tuple[int, ...] = DEFAULT_OUTPUTS_PER_CHAIN
    burn_ins: tuple[str, ...] = ("auto",)

    def validate(self) -> None:
        if not self.burn_ins:
            raise DdmkitError("give at least one burn-in (--burn-ins)")
        for b in self.burn_ins:
            parse_burn_in(b)
        for i in self.integrators:
            if i not in INTEGRATORS:
                raise DdmkitError(f"unknown integrator {i!r}; choose from {', '.join(INTEGRATORS)}")
            if i not in BUDGETABLE:
                raise DdmkitError(f"{i}'s NFE is adaptive and cannot be budgeted; choose from {', '.join(BUDGETABLE)}")
        if not self.integrators:
            raise DdmkitError("give at least one integrator")
        if not self.etas or any(not (math.isfinite(e) and e > 0) for e in self.etas):
            raise DdmkitError("--etas must be positive numbers")
        if not self.skip_shares or any(not (math.isfinite(s) and 0 < s < 1) for s in self.skip_shares):
            raise DdmkitError(f"--skip-shares must be numbers in (0, 1), got {', '.join(map(str, self.skip_shares))}")
        if not self.outputs_per_chain or any(int(k) != k or k < 1 for k in self.outputs_per_chain):
            raise DdmkitError("--outputs-per-chain must be whole numbers >= 1")


def burn_in_nfe(denoiser: Denoiser, classifier: NoiseLevelClassifier, burn_in: str = "auto") -> int:
    """The burn-in's NFE per chain, measured by running it on one chain."""
    sampler = DLGSampler(denoiser, classifier, DLGConfig(burn_in=burn_in), chains=1, seed=0, report=lambda m: None)
    return int(sampler.burn_in([0], [0])[2])


def settings_grid(target_nfe: float, space: TuneSpace, burn_nfe: dict[str, int]) -> list[dict]:
    """The DLG rows whose planned total NFE fits `target_nfe` (module docstring)."""
    rows = []
    for burn, opc in [(b, k) for b in space.burn_ins for k in space.outputs_per_chain]:
        per_output = target_nfe - burn_nfe[burn] / opc
        for integ in space.integrators:
            splits = set()
            for share in space.skip_shares:
                n_skip = max(1, int(round(share * per_output)))
                steps = max_steps(integ, per_output - n_skip - 1)
                if steps is not None:
                    splits.add((n_skip, steps))
            for n_skip, steps in sorted(splits):
                rows += [{"integrator": integ, "dlg": True, "eta": float(eta), "n_skip": n_skip, "steps": steps,
                          "outputs_per_chain": int(opc), "burn_in": burn} for eta in space.etas]
    return rows


def plain_grid(target_nfe: float, integrators: Sequence[str]) -> list[dict]:
    """Each integrator alone with the most steps that fit the budget (its NFE + 1 Tweedie)."""
    return [{"integrator": i, "dlg": False, "eta": None, "n_skip": None, "steps": max_steps(i, target_nfe - 1),
             "outputs_per_chain": None, "burn_in": None} for i in integrators if max_steps(i, target_nfe - 1) is not None]


def check_budget(target_nfe: float, space: TuneSpace, burn_nfe: dict[str, int]) -> None:
    """A budget below one DLG output's total NFE (1 Langevin step, the cheapest integration, Tweedie, the
    burn-in amortised at the most outputs per chain) is refused, naming the smallest that works."""
    cheapest = min(get_integrator(i).nfe(get_integrator(i).min_steps) for i in space.integrators)
    burn = min(burn_nfe.values())
    least = 1 + cheapest + 1 + burn / max(space.outputs_per_chain)
    if target_nfe < least:
        raise DdmkitError(f"--target-nfe {target_nfe:g} is below one DLG output's total NFE: at least {least:.3g} "
                          f"(1 Langevin step + {cheapest} integrator + 1 Tweedie + a {burn}-NFE burn-in over "
                          f"{max(space.outputs_per_chain)} outputs per chain); raise it or --outputs-per-chain")


def default_metric(denoiser: Denoiser) -> Metric:
    """(name, function of the samples) for the model's domain; lower is better."""
    inner = unwrap(denoiser)
    if isinstance(inner, GMMDenoiser):
        return "frechet_to_mixture", lambda x: frechet_to_mixture(x, inner.mixture)
    domain = inner.domain
    if domain in ("faces", "digits"):
        def fd(x: torch.Tensor) -> float:
            x = to_metric_range(x.numpy(), inner.data_range)  # e.g. a VE model's [0, 1] samples
            return float(evaluate_images(x, domain, with_noise_floor=False)["fd"])

        return f"fd_{domain}", fd
    raise DdmkitError("tune-dmcmc needs a metric for this model: give a reference set (--ref FOLDER or --ref-stats "
                      "FILE, scored by FID), or use a gmm: model or the faces/digits models")


def fid_metric(denoiser: Denoiser, reference: Any, inception_weights: str | None = None, device: str = "cpu") -> Metric:
    """FID against `reference` (a folder of images, or a pytorch-fid stats file .npz): its statistics are
    computed once; each candidate's samples are scored in the model's data range."""
    model, _ = load_extractor(inception_weights, device)
    ref = Path(reference)
    ref_stats = read_stats(ref) if ref.is_file() else inception_stats(read_image_set(ref, what="--ref"), model)
    rng = tuple(unwrap(denoiser).data_range or (-1.0, 1.0))

    def fid(x: torch.Tensor) -> float:
        a = x.numpy()
        return float(fid_value(inception_stats(ImageSet("samples", len(a), *a.shape[1:4], array=a, data_range=rng),
                                               model), ref_stats))

    return f"fid_vs_{ref.name}", fid


def _key(row: dict) -> tuple:
    return (row["integrator"], row["dlg"], row.get("eta"), row.get("n_skip"), row["steps"], row.get("outputs_per_chain"),
            row.get("burn_in"))


def score_row(denoiser: Denoiser, classifier: NoiseLevelClassifier, row: dict, num: int, seed: int,
              metric: Callable[[torch.Tensor], float], target_nfe: float) -> dict:
    """Sample one row's setting on `seed` and score it; the total NFE is measured (burn-in included)."""
    t0 = time.time()
    try:
        if row["dlg"]:
            chains = max(1, math.ceil(num / row["outputs_per_chain"]))
            cfg = DLGConfig(integrator=row["integrator"], steps=row["steps"], eta=row["eta"], n_skip=row["n_skip"],
                            burn_in=row.get("burn_in") or "auto")
            res = dlg_sample(denoiser, classifier, cfg, num=num, chains=chains, seed=seed, report=lambda m: None)
            x, total = res.x, res.nfe["per_output_with_burn_in"]
            mixing = output_mixing(res.x, res.chain)["ess_per_output"]["median"]
            extra = {"nfe_per_output": res.nfe["per_output"], "burn_in_per_chain": res.nfe["burn_in_per_chain"],
                     "chains": chains, "divergences": len(res.events), "ess_per_output": mixing}
        else:
            res = sample(denoiser, integrator=row["integrator"], steps=row["steps"], num=num, seed=seed, batch_size=100)
            x, total, extra = res.x, res.nfe_per_sample, {}
        out = {**row, "nfe": total, **extra, "metric": float(metric(x)), "within_budget": total <= target_nfe + 1e-9}
    except DdmkitError as e:
        out = {**row, "nfe": None, "metric": None, "error": str(e), "within_budget": False}
    out["seconds"] = round(time.time() - t0, 2)
    return out


def tune_dmcmc(denoiser: Denoiser, classifier: NoiseLevelClassifier, target_nfe: float, *,
               space: TuneSpace = TuneSpace(), num: int = 1000, seed: int = 0,
               score_seeds: Sequence[int] = DEFAULT_SCORE_SEEDS, metric: Metric | None = None,
               out: str | Path | None = None, header: dict | None = None, progress: bool = True) -> dict:
    """Search on `seed`, check the winners on `score_seeds` (module docstring); returns the table."""
    space.validate()
    if any(s == seed for s in score_seeds) or not score_seeds:
        raise DdmkitError(f"--score-seeds must be given and differ from the tuning --seed {seed} (scoring on the "
                          "seed the search chose on would flatter the winner)")
    burn = {b: burn_in_nfe(denoiser, classifier, b) for b in space.burn_ins}
    check_budget(target_nfe, space, burn)
    name, fn = metric or default_metric(denoiser)
    grid = settings_grid(target_nfe, space, burn) + plain_grid(target_nfe, space.integrators)
    table = _resumed(out, {**(header or {}), "target_nfe": target_nfe, "total_nfe": "per output + burn-in amortised",
                           "metric": name, "lower_is_better": True, "num": num, "seed": seed,
                           "score_seeds": list(score_seeds), "burn_in_per_chain": burn,
                           "space": {k: list(v) for k, v in vars(space).items()}, "rows": [], "validation": []})
    save = (lambda: atomic_write_json(out, table)) if out is not None else (lambda: None)
    done = {_key(r) for r in table["rows"]}
    for row in tqdm([r for r in grid if _key(r) not in done], disable=not progress, desc="tune-dmcmc"):
        table["rows"].append(score_row(denoiser, classifier, row, num, seed, fn, target_nfe))
        _pick(table)
        save()
    _pick(table)
    _validate(table, denoiser, classifier, fn, progress, save)
    _verdict(table, denoiser)
    save()
    return table


def _resumed(out: str | Path | None, table: dict) -> dict:
    """An earlier table of the same search (same budget, metric, sizes, seeds, space and model) continues."""
    if out is None or not Path(out).is_file():
        return table
    old = json.loads(Path(out).read_text())
    keys = ("target_nfe", "metric", "num", "seed", "score_seeds", "space", "model", "model_identity")
    if all(old.get(k) == table.get(k) for k in keys):
        table["rows"], table["validation"] = old.get("rows", []), old.get("validation", [])
    return table


def _pick(table: dict) -> None:
    ok = [r for r in table["rows"] if r.get("metric") is not None and r.get("within_budget")]
    table["best"] = min((r for r in ok if r["dlg"]), key=lambda r: r["metric"], default=None)
    table["best_plain"] = min((r for r in ok if not r["dlg"]), key=lambda r: r["metric"], default=None)


def _validate(table: dict, denoiser, classifier, fn, progress: bool, save: Callable[[], None]) -> None:
    """The best DLG and plain rows re-run on every score seed (resumable, one entry per run)."""
    done = {(v["kind"], v["seed"]) for v in table["validation"]}
    todo = [(kind, table[key], s) for kind, key in (("dlg", "best"), ("plain", "best_plain")) if table[key] is not None
            for s in table["score_seeds"] if (kind, s) not in done]
    for kind, row, s in tqdm(todo, disable=not progress, desc="tune-dmcmc: score seeds"):
        setting = {k: row.get(k) for k in ("integrator", "dlg", "eta", "n_skip", "steps", "outputs_per_chain", "burn_in")}
        r = score_row(denoiser, classifier, setting, table["num"], s, fn, table["target_nfe"])
        table["validation"].append({"kind": kind, "seed": s, **r})
        save()


def _verdict(table: dict, denoiser: Denoiser) -> None:
    """Mean and spread on the score seeds; whether DLG beats the best plain integrator; the settings file."""
    summary = {}
    for kind in ("dlg", "plain"):
        vals = [v["metric"] for v in table["validation"] if v["kind"] == kind and v.get("metric") is not None]
        summary[kind] = ({"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                          "n_seeds": len(vals)} if vals else None)
    d, p = summary["dlg"], summary["plain"]
    best, plain = table.get("best"), table.get("best_plain")
    if d is None:
        text = f"no DLG setting fits {table['target_nfe']:g} total NFE"
    elif p is None:
        text = f"DLG {d['mean']:.4g} on the score seeds; no plain integrator fits the budget"
    else:
        helps = d["mean"] < p["mean"]
        text = (f"DLG {'beats' if helps else 'does not beat'} the best plain integrator at {table['target_nfe']:g} "
                f"total NFE: {best['integrator']} DLG {d['mean']:.4g} +- {d['std']:.2g} against plain "
                f"{plain['integrator']} {p['mean']:.4g} +- {p['std']:.2g} ({table['metric']}, seeds "
                f"{', '.join(map(str, table['score_seeds']))})" + ("" if helps else "; use the plain integrator"))
        summary["dlg_helps"] = helps
    table["verdict"] = {**summary, "text": text}
    table["settings"] = None if best is None else DLGSettings(
        DLGConfig(integrator=best["integrator"], steps=best["steps"], eta=best["eta"], n_skip=best["n_skip"],
                  burn_in=best.get("burn_in") or "auto"),
        best["outputs_per_chain"], table.get("model_identity") or {}, table.get("noise_classifier"),
        table.get("noise_classifier_sha256"), best["nfe"],
        {"target_nfe": table["target_nfe"], "metric": table["metric"], "seed": table["seed"],
         "score_seeds": table["score_seeds"], "verdict": text}).to_json(denoiser)
