"""Denoising Langevin Gibbs (DLG): persistent MCMC chains over (x, sigma), then any integrator from each
chain's own sigma, then Tweedie (DMCMC spec sections 3-5, 10, 11).

    clf = load_classifier("faces_noise_classifier")         # a shipped classifier by name, or PATH
    result = dlg_sample(denoiser, clf, DLGConfig(integrator="kar1", steps=4, eta=0.8, n_skip=4), num=64, chains=16)
    result.x, result.chain, result.nfe["per_output"]

One chain per batch row; all chains move together (one batched model call per step). Per chain:

    burn-in (once):   x = s eps; x = KAR2(x, s, N=20) (s = the start level: the model's sigma_max or its
                      recorded default, `DLGConfig.sigma_max`); x += perturb eps; sigma = C(x)
                      n1 x langevin(eta1), then n2 x langevin(eta)          (the "cifar10" preset: 10 + 10)
    every round:      (x*, s*) = (x, sigma)                                  # the segment start is a candidate
                      n_skip x { x = x + (eta/2) s(x, sigma) + sqrt(eta) z;  sigma = C(x);
                                 if sigma < s* (strict): (x*, s*) = (x, sigma) }
                      y = integrator(x*, from s* down to 0, N steps);  y = D(y, sigma_tw)  (Tweedie)
                      emit clamp(y); the chain continues from (x, sigma), not (x*, s*)

C(x) = grid[argmax_k q(k|x)] (`sigma_step="argmax"`, the paper's) or a draw from q (`"sample"`);
`select="last"` hands the last state to the integrator instead of the minimum-sigma one.
`langevin_clip` (None: as the model; DDPMs clip D to the data range) sets the clamp of D inside the
Langevin score only, through a `view` of the model with its own clip (the integrator and Tweedie keep the model's setting).
`BurnIn.stop` > 0 ends the burn-in's KAR2 at that noise level instead of at 0 (a cheaper burn-in).
How well the chains mix, and where the error of a run comes from, is measured by `ddmkit.dmcmc.diagnostics`.

Units. `eta`, the burn-in perturbation and the warm-up etas are given in the paper's units, for data
in [0, 1]; ddmkit scales them to the model's data range (DMCMC spec section 10): eta and the warm-up
etas by data_scale^2 (4 for [-1, 1] data: 4 eta), the perturbation by data_scale (1.0 for [-1, 1]).
data_scale is 1 for unbounded data (mixtures), so there the values are used as they are. The Langevin
step is NOT scaled by sigma^2 (pitfall 2). sigma_lo (the integrators' last positive level) and
sigma_tw (Tweedie) default to the model's sigma_min.

NFE (measured by an `NFECounter`, never by formula): per output n_skip (Langevin) + the integrator's
NFE + 1 (Tweedie); the burn-in is reported separately, in total and amortised per output; classifier
passes are counted on their own. `nfe["per_output"]` is the sum of the first three.

Random numbers: chain c draws from its own `PerSampleGenerator` stream, re-derived for each round r
from (seed, c, its restart count, r). A round's result depends only on the chain state before it, so
a run that stops after any round and resumes from the saved state (`ChainState.save/load`) produces
exactly the samples of a run that never stopped.

Divergence: after every Langevin step and after integration, a chain whose state is non-finite or
whose per-sample RMS exceeds `divergence_factor` x (sigma_max + max |data range bound|; 1 for
unbounded data), default 10x, is marked diverged; it emits nothing that round and is restarted from a
fresh burn-in (with a new random stream). Each event is kept in `state.events` (for the manifest)
and printed on stderr.
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..denoisers import Denoiser, NFECounter, append_dims, unwrap, view
from ..errors import DdmkitError
from ..integrators import PerSampleGenerator, get_integrator
from ..sampling import check_seed, clamp_to_range, data_scale, default_sigma_lo, integrate, integrator_options, start_sigma
from ..schedules import karras_sigmas
from .noise_classifier import NoiseLevelClassifier
from ..io import atomic_save_npz


# ----------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class BurnIn:
    """The one-time burn-in: KAR2 from sigma_max with `kar2_steps` grid points, perturbation
    `perturb` (x += perturb eps), then Langevin warm-up phases (count, eta), eta None meaning the
    sampler's eta. `stop` > 0 ends the KAR2 integration at that sigma (its Karras grid from sigma_max
    down to `stop`, 2 (kar2_steps - 2) NFE) instead of at 0 (the paper's, 2 kar2_steps - 3 NFE), so the
    chain starts at a noise level without the steps below it. Perturbation, etas and `stop` in the
    paper's [0, 1]-data units."""

    kar2_steps: int = 20
    perturb: float = 0.5
    warmup: tuple[tuple[int, float | None], ...] = ((10, 0.5), (10, None))
    stop: float = 0.0

    def describe(self) -> str:
        phases = ",".join(f"{n}@{'eta' if e is None else f'{e:g}'}" for n, e in self.warmup)
        return f"{self.kar2_steps}:{self.perturb:g}:{phases}" + (f":{self.stop:g}" if self.stop > 0 else "")


BURN_IN_PRESETS = {
    "cifar10": BurnIn(20, 0.5, ((10, 0.5), (10, None))),  # the official CIFAR10 burn-in (57 NFE)
    "celebahq": BurnIn(20, 0.5, ((50, 1.6), (20, None))),  # the official CelebA-HQ burn-in (107 NFE)
}


def parse_burn_in(text: str | BurnIn | None, denoiser: Denoiser | None = None) -> BurnIn:
    """'auto' (cifar10 for vectors and images up to 64 px, celebahq above), a preset name, or
    'KAR2_STEPS:PERTURB:N1@ETA1,N2@eta[:STOP]' (e.g. '20:0.5:10@0.5,10@eta'; '8:0:2@eta:0.5' stops KAR2 at
    sigma 0.5, no perturbation; etas and STOP in [0, 1]-data units)."""
    if isinstance(text, BurnIn):
        return text
    text = (text or "auto").strip()
    if text == "auto":
        shape = tuple(unwrap(denoiser).sample_shape) if denoiser is not None else ()
        return BURN_IN_PRESETS["celebahq" if len(shape) == 3 and max(shape[1:]) > 64 else "cifar10"]
    if text in BURN_IN_PRESETS:
        return BURN_IN_PRESETS[text]
    try:
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise ValueError(text)
        steps, perturb, phases = parts[:3]
        warm = []
        for ph in filter(None, phases.split(",")):
            n, e = ph.split("@")
            warm.append((int(n), None if e.strip() == "eta" else float(e)))
        b = BurnIn(int(steps), float(perturb), tuple(warm), float(parts[3]) if len(parts) == 4 else 0.0)
    except ValueError:
        raise DdmkitError(
            f"--burn-in {text!r} not understood; give auto, {', '.join(BURN_IN_PRESETS)}, or "
            "KAR2_STEPS:PERTURB:N1@ETA1,N2@eta[:STOP] such as 20:0.5:10@0.5,10@eta"
        ) from None
    if (b.kar2_steps < (3 if b.stop > 0 else 2) or b.perturb < 0 or not (b.stop >= 0 and math.isfinite(b.stop))
            or any(n < 0 or (e is not None and e <= 0) for n, e in b.warmup)):
        raise DdmkitError(f"--burn-in {text!r}: need KAR2 steps >= 2 (>= 3 with a STOP), perturbation >= 0, "
                          "STOP >= 0, counts >= 0 and etas > 0")
    return b


@dataclass
class DLGConfig:
    """Settings of the DLG sampler (see the module docstring for units)."""

    integrator: str = "kar2"
    steps: int = 20
    eta: float = 0.8
    n_skip: int = 10
    sigma_step: str = "argmax"
    select: str = "min_sigma"
    burn_in: str | BurnIn = "auto"
    tweedie: bool = True
    sigma_lo: float | None = None
    tweedie_sigma: float | None = None
    options: dict = field(default_factory=dict)
    divergence_factor: float = 10.0
    langevin_clip: bool | None = None  # D clamped to the data range inside the Langevin score; None: as the model
    sigma_max: float | None = None  # the burn-in's start level; None: the model's (`ddmkit.sampling.start_sigma`)

    def validate(self) -> None:
        spec = get_integrator(self.integrator)
        if int(self.steps) != self.steps or self.steps < spec.min_steps:
            raise DdmkitError(f"--steps must be an integer >= {spec.min_steps} for {self.integrator}")
        if not (self.eta > 0 and math.isfinite(self.eta)):
            raise DdmkitError(f"the DLG step size eta must be > 0, got {self.eta}")
        if int(self.n_skip) != self.n_skip or self.n_skip < 0:
            raise DdmkitError(f"--n-skip must be an integer >= 0, got {self.n_skip}")
        if self.sigma_step not in ("argmax", "sample"):
            raise DdmkitError(f"--sigma-step must be 'argmax' or 'sample', got {self.sigma_step!r}")
        if self.select not in ("min_sigma", "last"):
            raise DdmkitError(f"--select must be 'min_sigma' or 'last', got {self.select!r}")
        if self.tweedie_sigma is not None and not (self.tweedie_sigma > 0 and math.isfinite(self.tweedie_sigma)):
            raise DdmkitError(f"--tweedie-sigma must be > 0, got {self.tweedie_sigma}")
        if self.sigma_lo is not None and not (self.sigma_lo > 0 and math.isfinite(self.sigma_lo)):
            raise DdmkitError(f"sigma_lo must be > 0, got {self.sigma_lo}")
        if not self.divergence_factor > 0:
            raise DdmkitError("divergence_factor must be > 0")
        parse_burn_in(self.burn_in)

    def to_json(self, denoiser: Denoiser | None = None) -> dict:
        d = asdict(self)
        d["burn_in"] = parse_burn_in(self.burn_in, denoiser).describe()
        return d


def dlg_seed(seed: int, chain: int, restart: int, tag: int, round_: int = 0) -> int:
    """The random stream of one chain for one burn-in (tag 1) or round (tag 2)."""
    ss = np.random.SeedSequence([check_seed(seed), 0xD1C, int(chain), int(restart), int(tag), int(round_)])
    return int(ss.generate_state(1, np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------------- state

@dataclass
class DLGTally:
    """The measured NFE of a run's chains (batched model calls, one per chain per step): burn-in per chain
    and in total, restarts' burn-ins, and per phase the calls (`*_calls`) and the calls summed over the
    outputs they made (`*_output_sum`, for the per-output averages of `summary`)."""

    burn_in_per_chain: int = 0
    burn_in_chain_total: int = 0
    restart_chain_total: int = 0
    mcmc_calls: int = 0
    integrator_calls: int = 0
    tweedie_calls: int = 0
    integrator_output_sum: int = 0
    mcmc_output_sum: int = 0
    tweedie_output_sum: int = 0
    outputs: int = 0
    rounds: int = 0
    classifier_calls: int = 0
    model_calls: int = 0

    def add_round(self, mcmc: int, integrator: int, tweedie: int, outputs: int) -> None:
        """One round: `mcmc` Langevin calls, `integrator` + `tweedie` calls that made `outputs` outputs."""
        self.mcmc_calls += mcmc
        self.integrator_calls += integrator
        self.tweedie_calls += tweedie
        self.mcmc_output_sum += mcmc * outputs
        self.integrator_output_sum += integrator * outputs
        self.tweedie_output_sum += tweedie * outputs
        self.outputs += outputs
        self.rounds += 1

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "DLGTally":
        return cls(**{k: int(d.get(k, 0)) for k in cls.__dataclass_fields__})

    @classmethod
    def merged(cls, tallies: Sequence["DLGTally"]) -> "DLGTally":
        """Several workers' chains as one run: counts add up; the burn-in per chain is the same everywhere
        (max); rounds ran in parallel (max)."""
        out = cls()
        for t in tallies:
            for k in cls.__dataclass_fields__:
                v = getattr(t, k)
                setattr(out, k, max(getattr(out, k), v) if k in ("burn_in_per_chain", "rounds") else getattr(out, k) + v)
        return out

    def summary(self, chains: int) -> dict:
        """The NFE split of a run, per output and in total (module docstring)."""
        n = max(self.outputs, 1)
        mcmc, integ, tw = self.mcmc_output_sum / n, self.integrator_output_sum / n, self.tweedie_output_sum / n
        burn_amort = (self.burn_in_chain_total + self.restart_chain_total) / n
        return {
            "per_output": mcmc + integ + tw,
            "mcmc_per_output": mcmc,
            "integrator_per_output": integ,
            "tweedie_per_output": tw,
            "burn_in_per_chain": self.burn_in_per_chain,
            "burn_in_total": self.burn_in_chain_total,
            "restart_burn_in_total": self.restart_chain_total,
            "burn_in_amortised_per_output": burn_amort,
            "per_output_with_burn_in": mcmc + integ + tw + burn_amort,
            "classifier_calls": self.classifier_calls,
            "classifier_calls_per_output": self.classifier_calls / n,
            "model_calls_batched": self.model_calls,
            "outputs": self.outputs,
            "rounds": self.rounds,
            "chains": chains,
            "note": "per_output = mcmc + integrator + tweedie (the paper's NFE); burn-in amortised separately; "
                    "counts are measured batched model calls (one per chain per step)",
        }


@dataclass
class ChainState:
    """Everything a run needs to continue: the chains (x, sigma), restart counts, round number,
    outputs done, divergence events and the NFE tallies. Saved atomically after every round."""

    x: torch.Tensor
    sigma: torch.Tensor
    restarts: torch.Tensor
    round: int = 0
    next_index: int = 0
    outputs_per_chain: torch.Tensor | None = None
    events: list = field(default_factory=list)
    nfe: DLGTally = field(default_factory=DLGTally)

    def save(self, path: str | os.PathLike) -> None:

        meta = {"round": self.round, "next_index": self.next_index, "events": self.events, "nfe": self.nfe.to_json()}
        atomic_save_npz(path, x=self.x.numpy(), sigma=self.sigma.numpy(), restarts=self.restarts.numpy(),
                        outputs_per_chain=self.outputs_per_chain.numpy(), meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ChainState":
        """The saved state; a corrupt file is a DdmkitError that says how to go on."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(torch.from_numpy(z["x"]), torch.from_numpy(z["sigma"]), torch.from_numpy(z["restarts"]),
                           int(meta["round"]), int(meta["next_index"]), torch.from_numpy(z["outputs_per_chain"]),
                           list(meta["events"]), DLGTally.from_json(meta["nfe"]))
        except Exception as e:  # truncated, object arrays, missing keys, bad JSON
            raise DdmkitError(f"the DLG chain state {path} is unreadable ({e.__class__.__name__}); delete the run's "
                              "parts folder to start it over, or choose a new --out") from None


@dataclass
class RoundOutput:
    """The outputs of one round: global indices, samples (clamped), which chain and which sigma*."""

    index: np.ndarray
    x: torch.Tensor
    chain: np.ndarray
    sigma_star: np.ndarray
    round: int
    integrator_nfe: int


@dataclass
class _Segment:
    """One round's chains after the Langevin-Gibbs steps: where they are (x, sigma), the states handed to
    the integrator (x_best, s_best), which chains are alive, and why the others diverged."""

    x: torch.Tensor
    sigma: torch.Tensor
    x_best: torch.Tensor
    s_best: torch.Tensor
    alive: torch.Tensor
    why: dict


# ----------------------------------------------------------------------------------- sampler

class DLGSampler:
    """Persistent DLG chains on a denoiser, with a noise-level classifier (module docstring)."""

    def __init__(self, denoiser: Denoiser, classifier: NoiseLevelClassifier, config: DLGConfig | None = None, *,
                 chains: int = 64, seed: int = 0, report: Callable[[str], None] | None = None,
                 chain_ids: Sequence[int] | None = None, noise: torch.Tensor | None = None):
        """`chain_ids`: the global ids of this sampler's chains (default 0..chains-1). A worker of a
        distributed run holds a block of the chains; chain c's random streams depend on c only, so a
        chain is the same chain whichever worker runs it. `noise` (chains, *sample_shape), unit normals:
        the starting noise of each chain's first burn-in (x = sigma_max noise) instead of its seeded draw."""
        self.config = config or DLGConfig()
        self.config.validate()
        if chain_ids is not None:
            chains = len(chain_ids)
        if chains < 1:
            raise DdmkitError(f"--chains must be >= 1, got {chains}")
        self.chain_ids = [int(c) for c in (chain_ids if chain_ids is not None else range(chains))]
        self.denoiser = denoiser
        self.inner = unwrap(denoiser)
        self.counter = NFECounter(denoiser)
        self.classifier = classifier
        self.chains = int(chains)
        self.seed = int(seed)
        self.burn = parse_burn_in(self.config.burn_in, denoiser)
        self.scale = data_scale(denoiser)
        self.eta = float(self.config.eta) * self.scale**2
        self.sigma_lo = default_sigma_lo(denoiser) if self.config.sigma_lo is None else float(self.config.sigma_lo)
        self.tweedie_sigma = self.sigma_lo if self.config.tweedie_sigma is None else float(self.config.tweedie_sigma)
        rng = self.inner.data_range
        self.s_start = start_sigma(denoiser, self.config.sigma_max)
        self.limit = self.config.divergence_factor * (float(self.inner.sigma_max) + (max(abs(rng[0]), abs(rng[1])) if rng else 1.0))
        self.report = report if report is not None else (lambda msg: print(msg, file=sys.stderr))
        self.shape = tuple(self.inner.sample_shape)
        self.device = self.inner.device
        self.options = integrator_options(self.config.integrator, denoiser, self.config.options)
        clip = self.config.langevin_clip
        model_clip = bool(self.inner.clip_denoised)
        # the Langevin score through a view with its own clip, its calls added to this sampler's count
        self.score_model = NFECounter(view(self.inner, clip_denoised=clip)) if clip is not None and bool(clip) != model_clip else None
        self._clf_seen = classifier.calls  # the classifier may be shared: count only this sampler's passes
        if noise is not None and tuple(noise.shape) != (self.chains,) + self.shape:
            raise DdmkitError(f"the starting noise must have shape {(self.chains,) + self.shape} (one per chain), "
                              f"got {tuple(noise.shape)}")
        self.start_noise = noise

    # -- moves ------------------------------------------------------------------------------
    def _streams(self, chain_ids, restarts, tag: int, round_: int = 0) -> PerSampleGenerator:
        return PerSampleGenerator([dlg_seed(self.seed, c, r, tag, round_) for c, r in zip(chain_ids, restarts)])

    def _randn(self, gen: PerSampleGenerator, n: int) -> torch.Tensor:
        return gen.randn((n,) + self.shape).to(self.device)

    def _start(self, gen: PerSampleGenerator, chain_ids: list[int], restarts: list[int]) -> torch.Tensor:
        """The unit noise a burn-in starts from: the seeded draw, or `noise` for a chain's first burn-in."""
        eps = self._randn(gen, len(chain_ids))
        first = [k for k, r in enumerate(restarts) if r == 0]
        if self.start_noise is not None and first:
            rows = [self.chain_ids.index(chain_ids[k]) for k in first]
            eps[first] = self.start_noise[rows].to(device=eps.device, dtype=eps.dtype)
        return eps

    def langevin(self, x: torch.Tensor, sigma: torch.Tensor, eta: float, gen) -> torch.Tensor:
        """x + (eta/2) s(x, sigma) + sqrt(eta) z: unadjusted Langevin, not scaled by sigma^2 (1 NFE)."""
        sigma = sigma.to(x.device, x.dtype)
        if self.score_model is None:
            score = self.counter.score(x, sigma)
        else:
            score = self.score_model.score(x, sigma)
            self.counter.nfe += self.score_model.reset()
        return x + 0.5 * eta * score + math.sqrt(eta) * self._randn(gen, len(x))

    def sigma_step(self, x: torch.Tensor, gen) -> torch.Tensor:
        return self.classifier.sigma(x, self.config.sigma_step, gen).float()

    def diverged(self, x: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        flat = x.detach().float().flatten(1)  # reduced where x lives: only 2 x B values come back
        finite = torch.isfinite(flat).all(dim=1).cpu()
        rms = flat.nan_to_num(0.0, 0.0, 0.0).pow(2).mean(1).sqrt().cpu()
        bad = ~finite | (rms > self.limit)
        why = ["non-finite state" if not f else f"state RMS {r:.3g} > limit {self.limit:.3g}" for f, r in zip(finite.tolist(), rms.tolist())]
        return bad, why

    @torch.no_grad()
    def burn_in(self, chain_ids: list[int], restarts: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The one-time burn-in of the given chains; returns x, sigma and its NFE (per chain)."""
        b = self.burn
        n = len(chain_ids)
        gen = self._streams(chain_ids, restarts, tag=1)
        c0 = self.counter.nfe
        s_max = self.s_start
        x = self._start(gen, chain_ids, restarts) * s_max
        if b.stop > 0:  # the Karras grid from sigma_max down to `stop`, without the final 0
            grid = karras_sigmas(b.kar2_steps, min(b.stop * self.scale, s_max), torch.full((n,), s_max))[:, :-1]
            x, _ = get_integrator("kar2")(self.counter, x, grid.to(x.device), generator=gen,
                                       **integrator_options("kar2", self.denoiser, None))
        else:
            x, _ = integrate(self.counter, x, torch.full((n,), s_max, dtype=torch.float64), "kar2", b.kar2_steps,
                             generator=gen, sigma_lo=self.sigma_lo)
        x = x + b.perturb * self.scale * self._randn(gen, n)
        sigma = self.sigma_step(x, gen)
        for count, e in b.warmup:
            eta = self.eta if e is None else e * self.scale**2
            for _ in range(count):
                x = self.langevin(x, sigma, eta, gen)
                sigma = self.sigma_step(x, gen)
        return x, sigma, self.counter.nfe - c0

    def init_state(self) -> ChainState:
        x, sigma, nfe = self.burn_in(self.chain_ids, [0] * self.chains)
        state = ChainState(x.detach().float().cpu(), sigma.cpu(), torch.zeros(self.chains, dtype=torch.int64),
                           outputs_per_chain=torch.zeros(self.chains, dtype=torch.int64))
        state.nfe.burn_in_per_chain = nfe
        state.nfe.burn_in_chain_total = nfe * self.chains
        bad, why = self.diverged(x)
        if bad.any():
            self._restart(state, bad, why, where="burn-in")
        state.nfe.model_calls = self.counter.nfe  # the restarts' burn-ins included
        state.nfe.classifier_calls = self._take_classifier_calls()
        return state

    def _restart(self, state: ChainState, bad: torch.Tensor, why: list[str], where: str) -> None:
        ids = [int(i) for i in torch.nonzero(bad).flatten()]
        for attempt in range(5):
            for c in ids:
                g = self.chain_ids[c]
                state.events.append({"round": state.round, "chain": g, "where": where, "reason": why[c],
                                     "restart": int(state.restarts[c]) + 1})
                self.report(f"ddmkit: DLG chain {g} diverged in round {state.round} ({where}: {why[c]}); "
                            "restarted from a fresh burn-in")
            for c in ids:
                state.restarts[c] += 1
            c0 = self.counter.nfe
            x, sigma, nfe = self.burn_in([self.chain_ids[c] for c in ids], [int(state.restarts[c]) for c in ids])
            state.nfe.restart_chain_total += (self.counter.nfe - c0) * len(ids)
            idx = torch.tensor(ids)
            state.x[idx] = x.detach().float().cpu()
            state.sigma[idx] = sigma.cpu()
            bad2, why2 = self.diverged(x)
            if not bad2.any():
                return
            why = {c: w for c, w, b in zip(ids, why2, bad2.tolist()) if b}
            ids = [c for c, b in zip(ids, bad2.tolist()) if b]
            where = "restart burn-in"
        raise DdmkitError(f"DLG chains {[self.chain_ids[c] for c in ids]} diverge even right after a fresh burn-in; "
                          "lower --dlg-eta or check the model")

    # -- one round --------------------------------------------------------------------------
    @torch.no_grad()
    def run_round(self, state: ChainState, num: int) -> RoundOutput:
        """n_skip Langevin-Gibbs steps of every chain, then one output from each live chain (at most
        num - state.next_index outputs, from the lowest chain ids). Updates `state` in place."""
        gen = self._streams(self.chain_ids, state.restarts.tolist(), tag=2, round_=state.round)
        c0 = self.counter.nfe
        seg = self._segment(state, gen)
        mcmc = self.counter.nfe - c0
        emit = torch.zeros(self.chains, dtype=torch.bool)
        emit[torch.nonzero(seg.alive).flatten()[: max(num - state.next_index, 0)]] = True
        y, int_nfe, tw_nfe = self._outputs(seg, emit, gen)
        chain_ids = torch.nonzero(emit).flatten().numpy()
        n = len(chain_ids)
        out = RoundOutput(index=np.arange(state.next_index, state.next_index + n, dtype=np.int64), x=y,
                          chain=np.asarray(self.chain_ids, dtype=np.int64)[chain_ids],
                          sigma_star=seg.s_best[emit].double().numpy(), round=state.round, integrator_nfe=int_nfe)
        state.x = seg.x.detach().float().cpu()  # the chains continue from (x, sigma), not from (x*, s*)
        state.sigma = seg.sigma
        state.nfe.add_round(mcmc, int_nfe, tw_nfe, n)
        state.outputs_per_chain[torch.as_tensor(chain_ids, dtype=torch.int64)] += 1
        state.next_index += n
        self._restart_diverged(state, ~seg.alive, seg.why)
        state.round += 1
        state.nfe.model_calls += self.counter.nfe - c0
        state.nfe.classifier_calls += self._take_classifier_calls()
        return out

    def _segment(self, state: ChainState, gen: PerSampleGenerator) -> "_Segment":
        """n_skip Langevin-Gibbs steps from the saved state, keeping each chain's minimum-sigma state (or
        its last, `select="last"`) and marking diverged chains (Algorithm 1's inner loop)."""
        x = state.x.to(self.device)
        sigma = state.sigma.clone()
        seg = _Segment(x, sigma, x.clone(), sigma.clone(), torch.ones(self.chains, dtype=torch.bool), {})
        for j in range(self.config.n_skip):
            x = self.langevin(x, sigma, self.eta, gen)
            bad, reasons = self.diverged(x)
            for c in torch.nonzero(bad & seg.alive).flatten().tolist():
                seg.why[c] = (f"Langevin step {j + 1}", reasons[c])
            if bad.any():
                seg.alive &= ~bad
                x = torch.where(append_dims(bad.to(x.device), x.ndim), torch.zeros_like(x), x)
            sigma = self.sigma_step(x, gen)
            if self.config.select == "min_sigma":
                upd = (sigma < seg.s_best) & seg.alive
                seg.x_best = torch.where(append_dims(upd.to(x.device), x.ndim), x, seg.x_best)
                seg.s_best = torch.where(upd, sigma, seg.s_best)
        seg.x, seg.sigma = x, sigma
        if self.config.select == "last":
            seg.x_best, seg.s_best = x, sigma
        return seg

    def _outputs(self, seg: "_Segment", emit: torch.Tensor, gen: PerSampleGenerator) -> tuple[torch.Tensor, int, int]:
        """The integrator from each emitting chain's (x*, s*) down to 0, then Tweedie; a diverged output is
        dropped and its chain marked (`emit`, `seg.alive` updated). Returns (outputs, integrator NFE, Tweedie NFE)."""
        cfg = self.config
        y = torch.zeros((0,) + self.shape)
        int_nfe = tw_nfe = 0
        if emit.any():
            c1 = self.counter.nfe
            y, _ = integrate(self.counter, seg.x_best[emit.to(seg.x.device)], seg.s_best[emit].double(), cfg.integrator,
                             cfg.steps, generator=gen.subset(emit), sigma_lo=self.sigma_lo, options=self.options)
            int_nfe = self.counter.nfe - c1
            if cfg.tweedie and self.tweedie_sigma > 0:
                y = self.counter(y, torch.full((len(y),), self.tweedie_sigma, dtype=y.dtype, device=y.device))
            tw_nfe = self.counter.nfe - c1 - int_nfe
            bad_y, reasons_y = self.diverged(y)
            ids = torch.nonzero(emit).flatten()
            for k in torch.nonzero(bad_y).flatten().tolist():
                c = int(ids[k])
                seg.why[c] = ("integrator", reasons_y[k])
                emit[c] = False
                seg.alive[c] = False
            y = y[~bad_y.to(y.device)]
        return clamp_to_range(self.denoiser, y.float()).cpu(), int_nfe, tw_nfe

    def _restart_diverged(self, state: ChainState, dead: torch.Tensor, why: dict[int, tuple[str, str]]) -> None:
        """A fresh burn-in for each diverged chain, reported once with the place it first diverged."""
        if not dead.any():
            return
        reasons = ["" for _ in range(self.chains)]
        for c, (_, reason) in why.items():
            reasons[c] = reason
        by_where: dict[str, list[int]] = {}
        for c in torch.nonzero(dead).flatten().tolist():
            by_where.setdefault(why[c][0], []).append(c)
        for where, ids in by_where.items():
            mask = torch.zeros(self.chains, dtype=torch.bool)
            mask[ids] = True
            self._restart(state, mask, reasons, where=where)

    def _take_classifier_calls(self) -> int:
        n = self.classifier.calls - self._clf_seen
        self._clf_seen = self.classifier.calls
        return n

    # -- whole runs --------------------------------------------------------------------------
    def run(self, num: int, state: ChainState | None = None,
            on_round: Callable[[RoundOutput, ChainState], None] | None = None,
            on_state: Callable[[ChainState], None] | None = None, progress: bool = False) -> ChainState:
        """Rounds until `num` outputs exist; `on_round(output, state)` after each (write the output,
        then save the state), `on_state(state)` once after the burn-in."""
        from tqdm.auto import tqdm

        if state is None:
            self._clf_seen = self.classifier.calls
            state = self.init_state()
            self._clf_seen = self.classifier.calls
            if on_state is not None:
                on_state(state)
        else:
            self._clf_seen = self.classifier.calls
            if tuple(state.x.shape) != (self.chains,) + self.shape:
                raise DdmkitError(f"saved chain state has shape {tuple(state.x.shape)}, expected {(self.chains,) + self.shape}")
        bar = tqdm(total=num, initial=state.next_index, disable=not progress, desc=f"dlg+{self.config.integrator}", unit="sample")
        stalled = 0
        while state.next_index < num:
            before = state.next_index
            out = self.run_round(state, num)
            bar.update(state.next_index - before)
            stalled = stalled + 1 if state.next_index == before else 0
            if stalled >= 10:
                raise DdmkitError("DLG made no sample in 10 rounds (every chain diverged); lower --dlg-eta or check the model")
            if on_round is not None:
                on_round(out, state)
        bar.close()
        return state


def nfe_summary(state: ChainState, chains: int) -> dict:
    """The NFE split of a run, per output and in total (`DLGTally.summary`)."""
    return state.nfe.summary(chains)


@dataclass
class DLGResult:
    x: torch.Tensor
    index: np.ndarray
    chain: np.ndarray
    sigma_star: np.ndarray
    nfe: dict
    events: list
    settings: dict


def dlg_sample(denoiser: Denoiser, classifier: NoiseLevelClassifier, config: DLGConfig | None = None, *,
               num: int = 64, chains: int | None = None, seed: int = 0, progress: bool = False,
               report: Callable[[str], None] | None = None, noise: torch.Tensor | None = None) -> DLGResult:
    """`num` DLG samples (in memory; `ddmkit sample --dmcmc` is the resumable, file-backed version);
    `noise` (chains, *sample_shape): each chain's starting noise (`DLGSampler`)."""
    config = config or DLGConfig()
    chains = int(chains or min(num, 64))
    sampler = DLGSampler(denoiser, classifier, config, chains=chains, seed=seed, report=report, noise=noise)
    outs: list[RoundOutput] = []
    state = sampler.run(num, on_round=lambda o, s: outs.append(o), progress=progress)
    cat = lambda k: np.concatenate([getattr(o, k) for o in outs]) if outs else np.zeros(0)  # noqa: E731
    x = torch.cat([o.x for o in outs]) if outs else torch.zeros((0,) + sampler.shape)
    return DLGResult(x, cat("index"), cat("chain"), cat("sigma_star"), nfe_summary(state, chains), state.events,
                     {**config.to_json(denoiser), "chains": chains, "seed": seed, "eta_effective": sampler.eta,
                      "sigma_lo": sampler.sigma_lo, "tweedie_sigma": sampler.tweedie_sigma,
                      "divergence_limit_rms": sampler.limit, "options_effective": sampler.options})
