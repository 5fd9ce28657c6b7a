"""The six integrators of the DMCMC paper plus DDIM, DPM-Solver++(2M) and UniPC, one small function each.

    x, nfe = f(denoiser, x, sigmas, *, generator=None, **options)

`sigmas` is a schedule (N,) or one schedule per sample (B, N), non-increasing, usually ending in 0;
every sample starts at its own sigmas[b, 0] (what Denoising MCMC needs). `nfe` is measured by an
`NFECounter` around the denoiser. `callback`, k-diffusion's hook, is called once per step as
`callback({"x", "i", "sigma", "sigma_hat", "denoised"})`: the state x the step starts from (after kar2's
churn), its level sigma_hat (= sigma but for kar2), and D(x, sigma_hat); rk45 calls it once per model
evaluation (the adaptive solver's trial states). It sees the tensors, it cannot change the result. Data are in sigma (VE) space: x = x0 + sigma * noise.
Schedules come from `ddmkit.schedules`; `ddmkit.sampling.make_schedule` picks the right one for each.

| name  | kind | update (DMCMC spec section 7)                                  | NFE for N levels    |
|-------|------|----------------------------------------------------------------|---------------------|
| kar1  | ODE  | Heun (Karras Alg. 1), Euler for the step to sigma = 0           | 2N - 3 (incl. the 0)|
| kar2  | SDE  | churn, then the same Heun step (Karras Alg. 2)                  | 2N - 3              |
| rd    | SDE  | reverse-diffusion predictor, x += D_j s + sqrt(D_j) z            | levels > 0          |
| em    | SDE  | Euler-Maruyama of the VE SDE in log-sigma time                  | levels > 0          |
| pf    | ODE  | probability-flow Euler, x += D_j s / 2                          | levels > 0          |
| rk45  | ODE  | scipy solve_ivp RK45 in log-sigma time (+1 Euler step to 0)     | measured            |
| ddim  | ODE/SDE | DDIM with eta (= Euler in sigma for eta = 0)                 | steps               |
| dpmpp_2m | ODE | DPM-Solver++(2M), multistep in lambda = -log sigma            | steps               |
| unipc | ODE  | UniPC-bh2, order 2: the 2M predictor + UniC corrector (no NFE)  | steps               |
"""
from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .denoisers import Denoiser, NFECounter, append_dims
from .errors import DdmkitError
from .schedules import as_rows

Generator = "torch.Generator | PerSampleGenerator | None"


def _hash32(x: np.ndarray) -> np.ndarray:
    """Wellons' lowbias32 integer hash on uint32 arrays (multiplication wraps modulo 2^32)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


@functools.lru_cache(maxsize=16)
def _element_hashes(m: int) -> np.ndarray:
    return _hash32(np.arange(m, dtype=np.uint32)[None, :])


class PerSampleGenerator:
    """Per-sample random streams (EDM's per-image seeds).

    Draw number k of sample b is a pure function of (seed_b, k and the sample's shape), so a sample's
    noise does not depend on the batch it is drawn in, the batch size, or the other samples. Large
    samples (images) draw from one `torch.Generator` each; small ones (mixture points, where a
    Python loop over thousands of generators would dominate) from a vectorised counter-based hash
    turned into normals by Box-Muller."""

    SMALL = 256  # elements per sample below which the vectorised hash stream is used

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        seeds = [int(s) for s in seeds]
        self.seeds = torch.as_tensor(seeds, dtype=torch.int64)
        self._lo = _hash32(np.array([s & 0xFFFFFFFF for s in seeds], dtype=np.uint32))
        self._hi = _hash32(np.array([(s >> 32) & 0xFFFFFFFF for s in seeds], dtype=np.uint32) ^ np.uint32(0x9E3779B9))
        self.counters = torch.zeros(len(seeds), dtype=torch.int64)
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, shape: Sequence[int], dtype=torch.float32, device=None) -> torch.Tensor:
        if shape[0] != len(self.seeds):
            raise DdmkitError(f"batch of {shape[0]} but {len(self.seeds)} per-sample random streams")
        n = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        if n >= self.SMALL:
            z = torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in self.generators]) if len(self) else torch.zeros(tuple(shape))
        else:
            z = self._hash_normals(n).reshape(tuple(shape))
        self.counters = self.counters + 1
        return z.to(dtype=dtype, device=device)

    def _hash_normals(self, n: int) -> torch.Tensor:
        m = (n + 1) // 2  # Box-Muller gives a pair (cos, sin) of normals per pair of uniforms
        count = (self.counters.numpy() & 0xFFFFFFFF).astype(np.uint32)
        key = _hash32(self._lo ^ _hash32(self._hi + count * np.uint32(0x632BE5AB)))[:, None]
        h1 = _hash32(key ^ _element_hashes(m))
        h2 = _hash32(h1 ^ np.uint32(0x5BD1E995))
        r = np.sqrt(-2.0 * np.log((h1.astype(np.float64) + 0.5) / 2.0**32))
        theta = (2.0 * np.pi / 2.0**32) * h2.astype(np.float64)
        return torch.from_numpy(np.concatenate([r * np.cos(theta), r * np.sin(theta)], axis=1)[:, :n])

    def subset(self, mask: torch.Tensor) -> "PerSampleGenerator":
        """The streams of the samples where `mask` is True; draws from it advance only those."""
        return _SubsetGenerator(self, torch.as_tensor(mask, dtype=torch.bool))


class _SubsetGenerator(PerSampleGenerator):
    def __init__(self, parent: PerSampleGenerator, mask: torch.Tensor):
        self.parent, self.mask = parent, mask
        self.seeds = parent.seeds[mask]
        self._lo, self._hi = parent._lo[mask.numpy()], parent._hi[mask.numpy()]
        self.generators = [g for g, m in zip(parent.generators, mask.tolist()) if m]

    @property
    def counters(self) -> torch.Tensor:
        return self.parent.counters[self.mask]

    @counters.setter
    def counters(self, value: torch.Tensor) -> None:
        self.parent.counters[self.mask] = value


def randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    if isinstance(generator, PerSampleGenerator):
        return generator.randn(x.shape, dtype=x.dtype, device=x.device)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _prepare(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> tuple[NFECounter, torch.Tensor]:
    return NFECounter(denoiser), as_rows(sigmas, x.shape[0], x.dtype).to(x.device)


def _d(counter: NFECounter, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma, and D."""
    den = counter(x, sigma)
    return (x - den) / append_dims(sigma, x.ndim), den


def _report(callback, x: torch.Tensor, i: int, sigma: torch.Tensor, denoised: torch.Tensor,
            sigma_hat: torch.Tensor | None = None) -> None:
    """k-diffusion's per-step callback (module docstring); nothing when there is none."""
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                  "denoised": denoised})


def _heun_step(counter: NFECounter, x: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor,
               report=None) -> torch.Tensor:
    """One step of Karras Alg. 1 from s to s_next (per sample); Euler where s_next = 0. `report(den)` sees
    D(x, s) (the callback)."""
    d, den = _d(counter, x, s)
    if report is not None:
        report(den)
    dt = append_dims(s_next - s, x.ndim)
    x_euler = x + dt * d
    positive = s_next > 0
    if not positive.any():
        return x_euler
    d2, _ = _d(counter, x_euler, torch.where(positive, s_next, torch.ones_like(s_next)))
    x_heun = x + dt * 0.5 * (d + d2)
    return torch.where(append_dims(positive, x.ndim), x_heun, x_euler)


@torch.no_grad()
def kar1(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator=None,
         callback=None) -> tuple[torch.Tensor, int]:
    """Karras et al. (2022) Algorithm 1: deterministic Heun sampler."""
    counter, sig = _prepare(denoiser, x, sigmas)
    for i in range(sig.shape[1] - 1):
        report = None if callback is None else (lambda den, x=x, i=i: _report(callback, x, i, sig[:, i], den))
        x = _heun_step(counter, x, sig[:, i], sig[:, i + 1], report)
    return x, counter.nfe


@torch.no_grad()
def kar2(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator=None,
    s_churn: float = 80.0,
    s_tmin: float = 0.05,
    s_tmax: float = 1.0,
    s_noise: float = 1.007,
    callback=None,
) -> tuple[torch.Tensor, int]:
    """Karras et al. (2022) Algorithm 2: stochastic churn (gamma capped at sqrt(2) - 1), then Heun.

    Defaults are the DMCMC paper's (S_churn 80, S_tmin 0.05, S_tmax 1, S_noise 1.007) for [0, 1] data."""
    validate_options("kar2", {"s_churn": s_churn, "s_tmin": s_tmin, "s_tmax": s_tmax, "s_noise": s_noise})
    counter, sig = _prepare(denoiser, x, sigmas)
    n = sig.shape[1]
    for i in range(n - 1):
        s, s_next = sig[:, i], sig[:, i + 1]
        gamma = torch.where(
            (s >= s_tmin) & (s <= s_tmax),
            torch.full_like(s, min(s_churn / n, math.sqrt(2) - 1)),
            torch.zeros_like(s),
        )
        s_hat = s * (1 + gamma)
        eps = randn_like(x, generator)
        x = x + s_noise * append_dims((s_hat**2 - s**2).clamp(min=0).sqrt(), x.ndim) * eps
        report = None if callback is None else (lambda den, x=x, i=i, s=s, s_hat=s_hat: _report(callback, x, i, s, den, s_hat))
        x = _heun_step(counter, x, s_hat, s_next, report)
    return x, counter.nfe


@torch.no_grad()
def rd(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator=None,
       callback=None) -> tuple[torch.Tensor, int]:
    """Reverse-diffusion predictor (Song et al. 2021): x += D_j s + sqrt(D_j) z, D_j = s_j^2 - s_(j+1)^2;
    returns the last mean."""
    counter, sig = _prepare(denoiser, x, sigmas)
    for i in range(sig.shape[1] - 1):
        s, s_next = sig[:, i], sig[:, i + 1]
        if not (s > 0).any():
            break
        delta = append_dims(s**2 - s_next**2, x.ndim)
        den = counter(x, s)
        _report(callback, x, i, s, den)
        score = (den - x) / append_dims(s, x.ndim) ** 2
        mean = x + delta * score
        x = mean + delta.sqrt() * randn_like(x, generator) if i < sig.shape[1] - 2 else mean
    return x, counter.nfe


@torch.no_grad()
def em(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator=None,
       callback=None) -> tuple[torch.Tensor, int]:
    """Euler-Maruyama for the reverse VE SDE in log-sigma time: g^2 dt = 2 s_j^2 ln(s_j / s_(j+1)).

    The step to sigma = 0 (where log time ends) is the mean update with g^2 dt = s_j^2, i.e. a
    Tweedie denoise; returns the last mean. (The official code's fixed dt = 1/N differs from this by
    the factor (N-1)/N on a geometric grid.)"""
    counter, sig = _prepare(denoiser, x, sigmas)
    for i in range(sig.shape[1] - 1):
        s, s_next = sig[:, i], sig[:, i + 1]
        if not (s > 0).any():
            break
        last = bool((s_next == 0).all())
        g2dt = torch.where(s_next > 0, 2 * s**2 * torch.log(s / s_next.clamp(min=1e-30)), s**2)
        den = counter(x, s)
        _report(callback, x, i, s, den)
        score = (den - x) / append_dims(s, x.ndim) ** 2
        mean = x + append_dims(g2dt, x.ndim) * score
        x = mean if last else mean + append_dims(g2dt.sqrt() * (s_next > 0), x.ndim) * randn_like(x, generator)
    return x, counter.nfe


@torch.no_grad()
def pf(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator=None,
       callback=None) -> tuple[torch.Tensor, int]:
    """Probability-flow ODE, Euler on the reverse-diffusion grid: x += (s_j^2 - s_(j+1)^2) s / 2."""
    counter, sig = _prepare(denoiser, x, sigmas)
    for i in range(sig.shape[1] - 1):
        s, s_next = sig[:, i], sig[:, i + 1]
        if not (s > 0).any():
            break
        den = counter(x, s)
        _report(callback, x, i, s, den)
        score = (den - x) / append_dims(s, x.ndim) ** 2
        x = x + 0.5 * append_dims(s**2 - s_next**2, x.ndim) * score
    return x, counter.nfe


@torch.no_grad()
def rk45(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    callback=None,
) -> tuple[torch.Tensor, int]:
    """Adaptive RK45 (scipy `solve_ivp`) on the probability-flow ODE, the batch as one flat system.

    Per sample, sigma(t) = s_end (s*/s_end)^t for t from 1 to 0, where s* = sigmas[:, 0] and s_end is
    the last positive level, so dx/dt = (x - D(x, sigma)) ln(s*/s_end). If the schedule ends in 0,
    one Euler step from s_end to 0 (x = D(x, s_end), 1 NFE) follows. NFE = evaluations used."""
    from scipy.integrate import solve_ivp

    validate_options("rk45", {"rtol": rtol, "atol": atol})
    counter, sig = _prepare(denoiser, x, sigmas)
    pos = sig > 0
    last_pos = pos.sum(dim=1) - 1
    s_start = sig[:, 0].double()
    s_end = sig.gather(1, last_pos[:, None]).squeeze(1).double()
    log_ratio = (s_start / s_end).log()
    shape, dtype, device = x.shape, x.dtype, x.device

    def f(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y).to(device=device, dtype=dtype).reshape(shape)
        sigma = (s_end * torch.exp(t * log_ratio)).to(dtype=dtype, device=device)
        den = counter(xt, sigma)
        _report(callback, xt, counter.nfe - 1, sigma, den)
        dx = (xt - den).double() * append_dims(log_ratio.to(device), len(shape))
        return dx.reshape(-1).cpu().numpy()

    if bool((log_ratio > 0).any()):
        sol = solve_ivp(f, (1.0, 0.0), x.double().reshape(-1).cpu().numpy(), method="RK45", rtol=rtol, atol=atol)
        if not sol.success:
            raise DdmkitError(f"RK45 failed: {sol.message}; loosen --rtol/--atol or check the model")
        x = torch.from_numpy(sol.y[:, -1]).to(device=device, dtype=dtype).reshape(shape)
    if bool((sig[:, -1] == 0).all()):
        den = counter(x, s_end.to(dtype))
        _report(callback, x, counter.nfe - 1, s_end.to(dtype), den)
        x = den
    return x, counter.nfe


@torch.no_grad()
def ddim(
    denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator=None, eta: float = 0.0, callback=None
) -> tuple[torch.Tensor, int]:
    """DDIM (Song et al. 2021a) in sigma space: x' = D + s_down (x - D)/s + s_up z, with k-diffusion's
    ancestral split s_up = min(s', eta sqrt(s'^2 (s^2 - s'^2) / s^2)), s_down = sqrt(s'^2 - s_up^2),
    which equals DDIM's sigma_t(eta) mapped to VE coordinates. eta = 0 is Euler in sigma."""
    if not (math.isfinite(eta) and eta >= 0):
        raise DdmkitError(f"eta must be >= 0, got {eta}")
    counter, sig = _prepare(denoiser, x, sigmas)
    for i in range(sig.shape[1] - 1):
        s, s_next = sig[:, i], sig[:, i + 1]
        den = counter(x, s)
        _report(callback, x, i, s, den)
        s_up = torch.minimum(s_next, eta * (s_next**2 * (s**2 - s_next**2) / s**2).clamp(min=0).sqrt())
        s_down = (s_next**2 - s_up**2).clamp(min=0).sqrt()
        x = den + append_dims(s_down / s, x.ndim) * (x - den)
        if eta > 0:
            x = x + append_dims(s_up, x.ndim) * randn_like(x, generator)
    return x, counter.nfe


def _lambda_step(s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
    """h = log(s / s') per row (the step in lambda = -log sigma); 0 where s' = 0 (the last step)."""
    return torch.where(s_next > 0, s.log() - s_next.clamp(min=1e-30).log(), torch.zeros_like(s))


def _multistep_2m(x: torch.Tensor, den: torch.Tensor, old_den: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor,
                  h: torch.Tensor, h_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++(2M) step s -> s' (Lu et al. 2022, Alg. 2): x' = (s'/s) x + (1 - s'/s) D^ with
    D^ = D + (D - D_old) h / (2 h_prev); first order (D^ = D) where s' = 0, h = 0 or h_prev = 0 (no usable
    previous step). Returns x' and the rows that took the second-order update."""
    second = (s_next > 0) & (h > 0) & (h_prev > 0)
    half_inv_r = torch.where(second, h / (2 * torch.where(second, h_prev, torch.ones_like(h))), torch.zeros_like(h))
    d_hat = den + append_dims(half_inv_r, x.ndim) * (den - old_den)
    ratio = append_dims(s_next / s, x.ndim)
    return ratio * x + (1 - ratio) * d_hat, second


@torch.no_grad()
def dpmpp_2m(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator=None,
             callback=None) -> tuple[torch.Tensor, int]:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2; k-diffusion's `sample_dpmpp_2m`) in sigma space, 1 NFE a step.

    Multistep in lambda = -log sigma with r = h_prev / h: D^ = (1 + 1/(2r)) D_i - D_(i-1) / (2r); first order
    (DDIM) on the first step, on the step to sigma = 0 (x' = D_i, diffusers' `lower_order_final`) and after a
    step of h = 0. Rows that have reached sigma = 0 stay where they are."""
    counter, sig = _prepare(denoiser, x, sigmas)
    old_den, h_prev = None, torch.zeros_like(sig[:, 0])
    for i in range(sig.shape[1] - 1):
        s, s_next = sig[:, i], sig[:, i + 1]
        active = s > 0
        if not active.any():
            break
        s = torch.where(active, s, torch.ones_like(s))  # finished rows: any positive level, the step is masked
        den = counter(x, s)
        _report(callback, x, i, s, den)
        h = _lambda_step(s, s_next)
        x_new, _ = _multistep_2m(x, den, den if old_den is None else old_den, s, s_next, h, h_prev)
        x = torch.where(append_dims(active, x.ndim), x_new, x)
        old_den, h_prev = den, torch.where(active, h, torch.zeros_like(h))
    return x, counter.nfe


def _unic_weights(h: torch.Tensor, rk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """UniC-2 weights (Zhao et al. 2023, eq. 9 with B(h) = e^h - 1, x0 prediction): (rho_1, rho_2) solves
    [[1, 1], [rk, 1]] rho = (b_1, b_2), b_k = k! phi_(k+1)(-h) / B(-h); phi by diffusers' recursion, in float64."""
    hh = -h.double()
    b_h = torch.expm1(hh)
    phi_1 = b_h / hh - 1
    b1, b2 = phi_1 / b_h, 2 * (phi_1 / hh - 0.5) / b_h
    rho1 = (b1 - b2) / (1 - rk.double())
    return rho1, b1 - rho1


def _unic(x: torch.Tensor, x_last: torch.Tensor, den: torch.Tensor, m0: torch.Tensor, m1: torch.Tensor,
          ratio: torch.Tensor, h: torch.Tensor, h_prev: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """UniC over the last step [s_(i-1), s_i] with D_i = `den` (taken at the predicted x_i): x_i = r x_(i-1) +
    (1 - r) (D_(i-1) + rho_1 (D_(i-2) - D_(i-1)) / rk + rho_2 (D_i - D_(i-1))), rk = -h_prev / h; after a
    first-order prediction rho_1 = 0, rho_2 = 1/2. No correction where h = 0."""
    nd = x.ndim
    pos = h > 0
    rk = torch.where(second, -h_prev / torch.where(pos, h, torch.ones_like(h)), -torch.ones_like(h))
    rho1, rho2 = _unic_weights(torch.where(pos, h, torch.ones_like(h)), rk)
    rho1 = torch.where(second, rho1.to(x.dtype), torch.zeros_like(h))
    rho2 = torch.where(second, rho2.to(x.dtype), torch.full_like(h, 0.5))
    corr = m0 + append_dims(rho1 / rk, nd) * (m1 - m0) + append_dims(rho2, nd) * (den - m0)
    r = append_dims(ratio, nd)
    return torch.where(append_dims(pos, nd), r * x_last + (1 - r) * corr, x)


@torch.no_grad()
def unipc(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, generator=None,
          callback=None) -> tuple[torch.Tensor, int]:
    """UniPC-bh2 of order 2 (Zhao et al. 2023, Alg. 2; diffusers' `UniPCMultistepScheduler` defaults) in sigma
    space, 1 NFE a step.

    Step i evaluates D_i at the predicted x_i, corrects x_i with it (UniC, `_unic`; the model is never called
    at the corrected point), then predicts x_(i+1) with the DPM-Solver++(2M) update (UniP-2 with B(h) =
    e^h - 1 is that update): first order on the first step and on the step to sigma = 0."""
    counter, sig = _prepare(denoiser, x, sigmas)
    if bool((sig[:, :-1] <= 0).any()):
        raise DdmkitError("unipc needs every level but the last > 0 (the schedule's one 0 is at its end)")
    h = h_prev = torch.zeros_like(sig[:, 0])
    second = torch.zeros_like(h, dtype=torch.bool)
    x_last = m0 = m1 = None
    for i in range(sig.shape[1] - 1):
        s, s_next = sig[:, i], sig[:, i + 1]
        den = counter(x, s)
        if i > 0:
            x = _unic(x, x_last, den, m0, m1, s / sig[:, i - 1], h, h_prev, second)
        _report(callback, x, i, s, den)
        old = den if m0 is None else m0
        h_next = _lambda_step(s, s_next)
        x_pred, second = _multistep_2m(x, den, old, s, s_next, h_next, h)
        x_last, m1, m0, h_prev, h = x, old, den, h, h_next
        x = x_pred
    return x, counter.nfe


@torch.no_grad()
def tweedie(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor | float) -> tuple[torch.Tensor, int]:
    """The final Tweedie step of the DMCMC paper: y = x + sigma^2 s(x, sigma) = D(x, sigma) (1 NFE)."""
    counter = NFECounter(denoiser)
    return counter(x, sigma), counter.nfe


@dataclass(frozen=True)
class Integrator:
    """An integrator and the facts about it that callers need, in one place (the registry below).

    `grid` names its schedule (`ddmkit.sampling.make_schedule`): "karras" (N points incl. the 0),
    "geometric" (N levels + 0), "rk45" (start, end, 0), "ddim" (the model's DDPM timesteps, else
    geometric), "dpm" (diffusers' multistep-solver timesteps for DDPM models, else Karras + 0; N steps). `min_steps` is the smallest N; `nfe(N)` its NFE (None: measured, rk45); its options
    are its keyword-only parameters; `data_scaled` are option defaults in [0, 1]-data units that
    scale with the data range's width (kar2's churn window)."""

    name: str
    fn: Callable[..., tuple[torch.Tensor, int]]
    kind: str
    grid: str
    min_steps: int
    nfe_rule: str
    ranges: tuple[tuple[str, float, float], ...] = ()  # (option, smallest, largest) accepted, all finite
    data_scaled: tuple[tuple[str, float], ...] = ()

    def __call__(self, denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, **kwargs) -> tuple[torch.Tensor, int]:
        return self.fn(denoiser, x, sigmas, **kwargs)

    @property
    def options(self) -> tuple[str, ...]:
        """The options it takes: its keyword-only parameters other than `generator` and `callback`."""
        params = inspect.signature(self.fn).parameters.values()
        return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("generator", "callback"))

    def nfe(self, steps: int) -> int | None:
        """NFE of one integration with N = `steps` (None where it is measured: rk45)."""
        return {"2N - 3": 2 * steps - 3, "N": steps, "measured": None}[self.nfe_rule]

    def max_steps(self, budget: int) -> int | None:
        """The largest N whose NFE fits `budget` (None if none does; 1 for rk45, which is measured)."""
        if self.nfe_rule == "measured":
            return 1
        best, n = None, self.min_steps
        while self.nfe(n) <= budget:
            best, n = n, n + 1
        return best

    def stochastic(self, options: dict | None = None) -> bool:
        """Whether it draws noise with these options (ddim only with eta > 0)."""
        if self.name == "ddim":
            return float((options or {}).get("eta", 0.0)) > 0
        return self.kind == "SDE"

    def check_steps(self, steps: int) -> None:
        if int(steps) != steps or steps < self.min_steps:
            what = " (N grid points including the final 0)" if self.grid == "karras" else ""
            raise DdmkitError(f"{self.name} needs --steps >= {self.min_steps}{what}, got {steps}")


INTEGRATORS: dict[str, Integrator] = {i.name: i for i in (
    Integrator("kar1", kar1, "ODE", "karras", 2, "2N - 3"),
    Integrator("kar2", kar2, "SDE", "karras", 2, "2N - 3",
               ranges=(("s_churn", 0.0, 1e6), ("s_tmin", 0.0, math.inf), ("s_tmax", 0.0, math.inf), ("s_noise", 0.0, 10.0)),
               data_scaled=(("s_tmin", 0.05), ("s_tmax", 1.0))),
    Integrator("rd", rd, "SDE", "geometric", 1, "N"),
    Integrator("em", em, "SDE", "geometric", 1, "N"),
    Integrator("pf", pf, "ODE", "geometric", 1, "N"),
    Integrator("rk45", rk45, "ODE", "rk45", 1, "measured", ranges=(("rtol", 1e-12, 1.0), ("atol", 1e-300, 10.0))),
    Integrator("ddim", ddim, "ODE", "ddim", 1, "N", ranges=(("eta", 0.0, 10.0),)),
    Integrator("dpmpp_2m", dpmpp_2m, "ODE", "dpm", 1, "N"),
    Integrator("unipc", unipc, "ODE", "dpm", 1, "N"),
)}


def validate_options(name: str, options: dict | None) -> None:
    """Refuse options the integrator does not take, and values that are not finite or out of range
    (rk45 with a NaN tolerance would never return)."""
    spec = get_integrator(name)
    rules = {k: (lo, hi) for k, lo, hi in spec.ranges}
    for key, value in (options or {}).items():
        if key not in spec.options:
            raise DdmkitError(f"integrator {name} has no option {key!r}"
                              + (f"; it takes {', '.join(spec.options)}" if spec.options else ""))
        lo, hi = rules[key]
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise DdmkitError(f"{name} option {key} must be a number, got {value!r}") from None
        if not (math.isfinite(v) and lo <= v <= hi):
            raise DdmkitError(f"{name} option {key} must be a finite number in [{lo:g}, {hi:g}], got {value!r}")


def get_integrator(name: str) -> Integrator:
    """The registry entry of `name` (callable like the integrator function)."""
    try:
        return INTEGRATORS[name]
    except KeyError:
        raise DdmkitError(f"unknown integrator {name!r}; choose one of {', '.join(INTEGRATORS)}") from None
