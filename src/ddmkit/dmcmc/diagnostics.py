"""Diagnostics that separate the error terms of DLG (issue 17): classifier, mixing, integrator, burn-in.

    res = dlg_sample(den, clf, cfg, num=chains * T, chains=chains)
    feats = chain_trace(res.chain, res.x)                 # (chains, T, D): each chain's outputs in order
    ess_per_output(feats)                                 # (D,) effective samples per output, per feature
    switch_rate(chain_trace(res.chain, labels))           # mode changes between successive outputs
    sigma_star_summary(res.sigma_star)                    # where the integrator was started
    x, nfe = integrate_from_truth(den, x0, sigma, "kar1", 4)   # the integrator alone, from exact x0 + sigma eps
    mixture_errors(x, mixture)                            # weight / mean / std errors, Frechet distances

Effective sample size. For M independent chains of T successive outputs each, with the pooled mean mu
and variance v of one feature and rho_t the pooled autocorrelation at lag t (rho_t = mean over chains
and i of (f_i - mu)(f_{i+t} - mu) / v), the variance of a chain's mean is v / T (1 + 2 sum_{t=1}^{T-1}
(1 - t/T) rho_t). The effective samples per output are

    ess_per_output = 1 / (1 + 2 sum_{t=1}^{T-1} (1 - t/T) rho_t) = v / (T mean_m (fbar_m - mu)^2),

the second form (batch means with one batch per chain) being the same number computed in O(M T).
Because mu and v are pooled over chains, a chain that never leaves its mode has rho_t = 1 and gives
1 / T (it is worth one sample, its burn-in's); independent outputs give 1; T = 1 gives 1 by definition
(each chain is an independent draw). Unlike Geyer's truncated sum (Stan), nothing is truncated: every
lag a run holds is used, so frozen chains read exactly 1 / T.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..denoisers import Denoiser
from ..integrators import PerSampleGenerator
from ..sampling import clamp_to_range, default_sigma_lo, integrate, sample_seed
from ..mixtures import frechet_to_mixture


def chain_trace(chain: np.ndarray, values: Any) -> np.ndarray:
    """(M, T, ...) array of `values` (one row per output, in output-index order) grouped by chain; T is
    the smallest number of outputs of any chain (a chain's outputs keep their emission order)."""
    chain = np.asarray(chain)
    values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    ids, counts = np.unique(chain, return_counts=True)
    t = int(counts.min()) if len(counts) else 0
    rows = [values[np.flatnonzero(chain == c)[:t]] for c in ids]
    return np.stack(rows) if rows else np.zeros((0, 0) + values.shape[1:])


def ess_per_output(features: np.ndarray) -> np.ndarray:
    """Effective samples per output of each feature of (M, T, F) traces (module docstring); NaN for a
    feature with no variance."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim == 2:
        f = f[..., None]
    m, t = f.shape[:2]
    if t == 1:
        return np.ones(f.shape[2])
    mu = f.mean(axis=(0, 1))
    v = f.var(axis=(0, 1))
    between = ((f.mean(axis=1) - mu) ** 2).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = v / (t * between)
    return np.where(v > 0, out, np.nan)


def autocorrelation(features: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """(len(lags), F) pooled autocorrelation rho_t of (M, T, F) traces (module docstring); NaN beyond T - 1."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim == 2:
        f = f[..., None]
    c = f - f.mean(axis=(0, 1))
    v = (c**2).mean(axis=(0, 1))
    out = np.full((len(lags), f.shape[2]), np.nan)
    for i, lag in enumerate(lags):
        if 0 <= lag < f.shape[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[i] = (c[:, lag:] * c[:, : f.shape[1] - lag]).mean(axis=(0, 1)) / v
    return out


def summarise(values: np.ndarray) -> dict:
    """min / median / mean of the finite entries (features with no variance are left out)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"min": None, "median": None, "mean": None, "features": 0}
    return {"min": float(v.min()), "median": float(np.median(v)), "mean": float(v.mean()), "features": int(len(v))}


def switch_rate(labels: np.ndarray) -> dict:
    """Share of successive outputs of a chain whose label (mode, class) differs, against the rate of
    independent draws from the same label frequencies, 1 - sum_k p_k^2."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.shape[1] < 2:
        return {"rate": None, "independent_rate": None, "relative": None}
    rate = float((lab[:, 1:] != lab[:, :-1]).mean())
    _, counts = np.unique(lab, return_counts=True)
    p = counts / counts.sum()
    indep = float(1.0 - (p**2).sum())
    return {"rate": rate, "independent_rate": indep, "relative": rate / indep if indep > 0 else None}


def sigma_star_summary(sigma_star: np.ndarray, per_decade: int = 10) -> dict:
    """Quantiles of sigma* and a histogram of log10 sigma* (`per_decade` bins per decade)."""
    s = np.asarray(sigma_star, dtype=np.float64).ravel()
    if not len(s):
        return {"n": 0}
    q = np.quantile(s, [0.05, 0.25, 0.5, 0.75, 0.95])
    lo, hi = math.floor(np.log10(s.min()) * per_decade), math.ceil(np.log10(s.max()) * per_decade + 1e-9)
    edges = np.arange(lo, max(hi, lo + 1) + 1) / per_decade
    counts, _ = np.histogram(np.log10(s), bins=edges)
    return {"n": int(len(s)), "q05": q[0], "q25": q[1], "median": q[2], "q75": q[3], "q95": q[4],
            "mean_log10": float(np.log10(s).mean()), "hist_log10_edges": edges.round(4).tolist(),
            "hist_counts": counts.tolist()}


@torch.no_grad()
def integrate_from_truth(denoiser: Denoiser, x0: torch.Tensor, sigma: np.ndarray | torch.Tensor, integrator: str,
                         steps: int, *, seed: int = 0, tweedie: bool = True, options: dict | None = None,
                         start_sigma: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         batch_size: int = 1000) -> tuple[torch.Tensor, float, np.ndarray]:
    """The integrator alone: exact samples of p_sigma, x = x0 + sigma eps (one sigma per row, per-row
    seeds), integrated from sigma (or from `start_sigma(x)`, e.g. a noise classifier's estimate, to
    measure its error on exact states) down to 0 with the model's sigma_lo, then Tweedie; clamped to the
    data range. Returns the samples, the measured NFE per sample and the starting sigmas."""
    sigma = torch.as_tensor(np.asarray(sigma, dtype=np.float64)).reshape(-1)
    lo = default_sigma_lo(denoiser)
    outs, starts, nfe = [], [], 0.0
    for i in range(0, len(x0), batch_size):
        xb, sb = x0[i : i + batch_size].float(), sigma[i : i + batch_size]
        gen = PerSampleGenerator([sample_seed(seed, j) for j in range(i, i + len(xb))])
        noise = gen.randn(xb.shape).to(denoiser.device)
        x = xb.to(denoiser.device) + sb.float().reshape((-1,) + (1,) * (xb.ndim - 1)).to(denoiser.device) * noise
        if start_sigma is not None:
            sb = torch.as_tensor(start_sigma(x)).double().cpu()
        y, n = integrate(denoiser, x, sb, integrator, steps, generator=gen, sigma_lo=lo,
                         tweedie_sigma=lo if tweedie else None, options=options)
        outs.append(clamp_to_range(denoiser, y.float()).cpu())
        starts.append(sb.numpy())
        nfe += n * len(xb)
    return torch.cat(outs), nfe / max(len(x0), 1), np.concatenate(starts) if starts else np.zeros(0)


def mixture_errors(x: torch.Tensor, mixture) -> dict:
    """Errors of samples x against an exact Gaussian mixture, each sample assigned to its most probable
    component: weight error 0.5 sum_k |w_hat_k - w_k| (total variation); mean error sum_k w_k
    RMS_d((m_hat_kd - mu_kd) / s_kd) (in component stds); std error sum_k w_k RMS_d(s_hat_kd / s_kd - 1);
    the Frechet distance of the samples' Gaussian fit to the mixture's exact moments; and the weighted
    within-component Frechet distance (weight errors excluded)."""

    x = x.double()
    if not torch.isfinite(x).all():
        return {"non_finite": int((~torch.isfinite(x)).any(1).sum())}
    comp = mixture.assign(x)
    kk = mixture.num_components
    w = torch.bincount(comp, minlength=kk).double() / len(x)
    mean_err = std_err = within = 0.0
    for k in range(kk):
        xk = x[comp == k]
        wk = float(mixture.weights[k])
        if len(xk) < 2:
            return {"weight_error": float(0.5 * (w - mixture.weights).abs().sum()), "empty_component": k}
        mean_err += wk * float((((xk.mean(0) - mixture.means[k]) / mixture.stds[k]) ** 2).mean().sqrt())
        std_err += wk * float(((xk.std(0) / mixture.stds[k] - 1) ** 2).mean().sqrt())
        within += wk * _fd_to_diag_gaussian(xk, mixture.means[k], mixture.stds[k])
    return {"weight_error": float(0.5 * (w - mixture.weights).abs().sum()), "mean_error": mean_err,
            "std_error": std_err, "frechet": frechet_to_mixture(x.float(), mixture), "frechet_within": within}


def _fd_to_diag_gaussian(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> float:
    """Frechet distance between the Gaussian fit of x and N(mean, diag(std^2))."""
    xn = x.numpy()
    mu, cov = xn.mean(0), np.atleast_2d(np.cov(xn, rowvar=False))
    s = std.numpy()
    ev = np.linalg.eigvalsh(s[:, None] * cov * s[None, :])  # sqrt(S cov S) has the trace of sqrt(cov S^2)
    return float(((mu - mean.numpy()) ** 2).sum() + np.trace(cov) + (s**2).sum() - 2 * np.sqrt(np.clip(ev, 0, None)).sum())


def output_mixing(x: Any, chain: np.ndarray, sigma_star: np.ndarray | None = None, projections: int = 16,
                  seed: int = 0) -> dict:
    """What `sample --dmcmc` reports about its chains: the ESS per output (module docstring) on `projections`
    fixed random unit projections of the flattened outputs (seeded: model-agnostic features, the same for
    every run of a model's shape), the lag-1 autocorrelation, T and the sigma* quantiles."""
    xs = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    flat = xs.reshape(len(xs), -1).astype(np.float64)
    dirs = np.random.default_rng(seed).standard_normal((flat.shape[1], projections))
    trace = chain_trace(chain, flat @ (dirs / np.linalg.norm(dirs, axis=0)))
    out = {"outputs_per_chain": int(trace.shape[1]), "features": f"{projections} fixed random projections (seed {seed})",
           "ess_per_output": summarise(ess_per_output(trace)),
           "lag1_autocorrelation": summarise(autocorrelation(trace, [1])[0])}
    if sigma_star is not None:
        out["sigma_star"] = {k: v for k, v in sigma_star_summary(sigma_star).items() if not k.startswith("hist")}
    return out
