"""`ddmkit sample --dmcmc`: DLG sampling into a sample folder, resumable after any interruption.

Folder layout (as for plain sampling, `ddmkit.outputs`), plus while running:
    OUT/parts/part-<first>-<last>.npz   the outputs of one round: index, x, chain, sigma_star, round
    OUT/parts/chains.npz                the chain state after the last finished round (atomic);
                                        chains-rank<k>-of-<n>.npz per worker under torchrun
    OUT/parts/dlg-workers.json          the number of workers the run started with
After each round the round's part is written first, then the state. If the run is killed (even
kill -9) anywhere, rerunning the same command loads the last state; a round whose part was written
but whose state was not is recomputed identically (its random streams depend on the saved state
only) and its part overwritten, so no sample is lost or duplicated.
Under torchrun the chains and the sample indices are cut into contiguous blocks, one per worker
(`run_dmcmc_sample`); chain ids are global, so chain c draws the same random streams on any worker.
The finished folder has samples.npz with arrays x, index, chain (the chain that made each sample)
and sigma_star (the sigma it was handed to the integrator at), and manifest.json with the NFE split
and the divergence events.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..assets import shipped_model
from ..distributed import Dist, block
from ..errors import DdmkitError
from ..io import atomic_write_json, file_sha256
from ..models.loading import model_identity
from ..outputs import PartStore, write_sample_folder
from .diagnostics import output_mixing
from .dlg import ChainState, DLGConfig, DLGSampler, DLGTally, RoundOutput
from .noise_classifier import ORACLE, NoiseLevelClassifier, check_compatible, load_classifier, oracle_classifier, paths_for

@dataclass(frozen=True)
class DmcmcRun:
    """What a file-backed DLG run needs besides its `DLGConfig`: the output folder, how many samples from how
    many chains, the base seed, the model's spec (for its shipped classifier) and the classifier to use
    (a file, `oracle`, or None: the shipped one), its precision and whether to compile it."""

    out: Path
    num: int
    seed: int
    chains: int
    model_spec: str | None = None
    noise_classifier: str | None = None
    classifier_dtype: str = "fp32"
    classifier_compile: bool = False
    progress: bool = True

    def validate(self, world_size: int = 1) -> None:
        if self.chains < 1:
            raise DdmkitError(f"--chains must be >= 1, got {self.chains}")
        if self.chains < world_size:
            raise DdmkitError(f"{self.chains} DLG chains cannot be split over {world_size} workers; give --chains >= "
                              f"{world_size}")


def shipped_classifier_path(model_spec: str | None) -> Path | None:
    asset = shipped_model(model_spec)
    return asset.noise_classifier if asset is not None else None


def resolve_classifier(path: str | None, model_spec: str | None, denoiser, identity: dict,
                       device="cpu") -> tuple[NoiseLevelClassifier, str]:
    """The classifier given by --noise-classifier (a file, or the name `oracle`: the exact posterior of a
    gmm: model), else the one shipped for the model; checked against the model (DdmkitError naming the
    fix otherwise). Returns the classifier and its weights file (`oracle` for the oracle)."""
    if path == ORACLE:
        return oracle_classifier(denoiser).to(device), ORACLE
    if path is None:
        shipped = shipped_classifier_path(model_spec)
        if shipped is None:
            raise DdmkitError(
                f"--dmcmc needs a noise-level classifier for model {model_spec!r}: train one with "
                f"`ddmkit noise-classifier train --model {model_spec} --out PATH` and pass --noise-classifier PATH"
            )
        path = str(shipped)
    elif not all(p.is_file() for p in paths_for(path)):
        w, m = paths_for(path)
        raise DdmkitError(f"--noise-classifier {path!r} is not a known name ({ORACLE}: the exact posterior, gmm: models "
                          f"only) and its files are not found ({w.name}, {m.name}); train one with "
                          "`ddmkit noise-classifier train --model M --out PATH`")
    clf = load_classifier(path, device=device)
    check_compatible(clf, denoiser, identity, path=str(path))
    return clf, str(paths_for(path)[0])


LAYOUT_FILE = "dlg-workers.json"


def state_file(parts: Path, rank: int, world: int) -> Path:
    """The chain-state file of one worker: parts/chains.npz for one process (as before scale-out),
    parts/chains-rank<k>-of-<n>.npz for worker k of n."""
    return parts / ("chains.npz" if world == 1 else f"chains-rank{rank}-of-{world}.npz")


def check_layout(parts: Path, world: int) -> None:
    """A DLG run resumes only with the number of workers it started with (the chains are split)."""
    started = None
    layout = parts / LAYOUT_FILE
    if layout.is_file():
        started = int(json.loads(layout.read_text())["world_size"])
    elif (parts / "chains.npz").is_file():
        started = 1
    else:
        found = sorted({int(f.name.rsplit("-of-", 1)[1][:-4]) for f in parts.glob("chains-rank*-of-*.npz")})
        started = found[0] if found else None
    if started is not None and started != world:
        how = "without torchrun" if started == 1 else f"with torchrun --nproc_per_node {started} (in all)"
        raise DdmkitError(f"{parts.parent} holds an unfinished --dmcmc run of {started} worker(s) and this one has "
                          f"{world}: DLG chains are split across workers, so resume it {how}, or choose a new --out")


def run_dmcmc_sample(run: DmcmcRun, config: DLGConfig, denoiser, base_settings: dict, device: str, dist=None,
                     callback: Callable[[RoundOutput, ChainState], None] | None = None) -> int:
    """DLG samples into `run.out` (module docstring), checked before anything is written; `callback(output,
    state)` after each round's part and chain state are on disk.

    With several workers (`dist`), worker k of n runs the chains block(chains, k, n) and fills the
    sample indices block(num, k, n) (both contiguous, ddmkit.distributed.block), keeping its own
    chain state; rank 0 merges the parts and writes the manifest with the global chain id of every
    sample. A run resumes only with the number of workers it started with."""
    dist = dist or Dist(device=device)
    config.validate()
    run.validate(dist.world_size)
    identity = base_settings.get("model_identity") or model_identity(denoiser)
    clf, clf_path = resolve_classifier(run.noise_classifier, run.model_spec, denoiser, identity, device=device)
    clf.set_precision(run.classifier_dtype)
    if run.classifier_compile:
        clf.compile()
    settings = {**base_settings, "dmcmc": {**config.to_json(denoiser), "chains": run.chains,
                                           "noise_classifier": clf_path,
                                           "noise_classifier_sha256": None if clf_path == ORACLE else file_sha256(clf_path),
                                           "noise_classifier_dtype": clf.dtype}}
    store = PartStore(run.out, settings)
    check_layout(store.dir, dist.world_size)
    worker = _Worker(run, config, denoiser, clf, store, dist, device)
    report = worker.sample(callback)
    reports = dist.all_gather_object(report)
    dist.barrier()  # every part is on disk
    if dist.is_main:
        _write_folder(run, worker, settings, reports, device)
    return 0


class _Worker:
    """One worker's share of a DLG run: its block of chains and of sample indices, its chain-state file."""

    def __init__(self, run: DmcmcRun, config: DLGConfig, denoiser, clf: NoiseLevelClassifier, store: PartStore, dist,
                 device: str):
        W, rank = dist.world_size, dist.rank
        self.run, self.config, self.denoiser, self.clf, self.store, self.dist = run, config, denoiser, clf, store, dist
        self.device = device
        self.c_lo, self.c_hi = block(run.chains, rank, W)
        self.i_lo, self.i_hi = block(run.num, rank, W)
        self.sampler = DLGSampler(denoiser, clf, config, seed=run.seed, chain_ids=range(self.c_lo, self.c_hi))
        self.state_path = state_file(store.dir, rank, W)

    def sample(self, callback) -> dict:
        """Run (or resume) this worker's rounds; returns its report for the manifest."""
        state = ChainState.load(self.state_path) if self.state_path.is_file() else None
        self.resumed_round = state.round if state is not None else None
        self.store.start()
        if self.dist.is_main and not (self.store.dir / LAYOUT_FILE).is_file():
            atomic_write_json(self.store.dir / LAYOUT_FILE, {"world_size": self.dist.world_size})
        self.dist.barrier()
        self.t0 = t0 = time.time()

        def on_round(o: RoundOutput, s: ChainState) -> None:
            if len(o.index):
                self.store.write(o.index + self.i_lo, o.x.numpy(), chain=o.chain,
                                 sigma_star=o.sigma_star.astype(np.float64),
                                 round=np.full(len(o.index), o.round, dtype=np.int64))
            s.save(self.state_path)
            if callback is not None:
                callback(o, s)

        my_num = self.i_hi - self.i_lo
        if my_num > 0 or state is not None:
            state = self.sampler.run(my_num, state=state, on_round=on_round, on_state=lambda s: s.save(self.state_path),
                                     progress=self.run.progress and self.dist.is_main)
        else:  # more workers than samples: this one has nothing to do
            state = ChainState(torch.zeros((0,)), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                               outputs_per_chain=torch.zeros(self.c_hi - self.c_lo, dtype=torch.int64))
        return {"rank": self.dist.rank, "device": self.device, "chains": [self.c_lo, self.c_hi],
                "indices": [self.i_lo, self.i_hi], "nfe": state.nfe.to_json(), "events": state.events,
                "outputs_per_chain": state.outputs_per_chain.tolist(), "resumed_from_round": self.resumed_round,
                "rounds": state.round, "seconds": round(time.time() - t0, 3)}


def _write_folder(run: DmcmcRun, worker: _Worker, settings: dict, reports: list[dict], device: str) -> None:
    """Rank 0: merge every worker's parts into samples.npz and write the manifest (the NFE split, events,
    mixing report), then remove the parts."""
    denoiser, sampler, config = worker.denoiser, worker.sampler, worker.config
    merged = worker.store.gather(range(run.num), shared_hint=worker.dist.enabled)
    nfe = DLGTally.merged([DLGTally.from_json(r["nfe"]) for r in reports]).summary(run.chains)
    events = [e for r in reports for e in r["events"]]
    inner_range = denoiser.data_range
    manifest = {
        **settings,
        "ddmkit_version": __version__,
        "domain": denoiser.domain,
        "data_range": list(inner_range) if inner_range else None,
        "sample_shape": list(denoiser.sample_shape),
        "device": device,
        "nfe_per_sample": nfe["per_output"],
        "nfe": nfe,
        "sampler_settings": {**config.to_json(denoiser), "chains": run.chains, "eta_effective": sampler.eta,
                             "sigma_lo": sampler.sigma_lo, "tweedie_sigma": sampler.tweedie_sigma,
                             "divergence_limit_rms": sampler.limit, "options_effective": sampler.options,
                             "noise_classifier_held_out": worker.clf.meta.get("held_out")},
        "divergence_events": events,
        "mixing": output_mixing(merged["x"], merged["chain"], merged["sigma_star"]),
        "chain": merged["chain"].tolist(),
        "outputs_per_chain": [n for r in reports for n in r["outputs_per_chain"]],
        "resumed_from_round": worker.resumed_round,
        "seconds": round(time.time() - worker.t0, 3),
        "world_size": worker.dist.world_size,
        "ranks": [{k: v for k, v in r.items() if k not in ("nfe", "events", "outputs_per_chain")} for r in reports],
    }
    write_sample_folder(run.out, merged["x"], merged["index"], manifest, inner_range, denoiser.is_image,
                        extra={"chain": merged["chain"], "sigma_star": merged["sigma_star"]})
    worker.store.remove()
    _print_summary(run, nfe, events, manifest["mixing"], worker.dist.world_size)


def _print_summary(run: DmcmcRun, nfe: dict, events: list, mixing: dict, world: int) -> None:
    ev = f", {len(events)} divergence restarts" if events else ""
    workers = f" on {world} workers" if world > 1 else ""
    print(f"{run.num} samples by DLG ({run.chains} chains{workers}), {nfe['per_output']:g} NFE each "
          f"+ {nfe['burn_in_amortised_per_output']:.3g} burn-in{ev} -> {run.out}")
    ess = mixing["ess_per_output"]["median"]
    if ess is not None and ess < 0.5:
        print(f"ddmkit: note: {ess:.2f} effective samples per output (manifest 'mixing'): successive outputs of a "
              "chain are near-copies; use more --chains (fewer outputs per chain)", file=sys.stderr)
