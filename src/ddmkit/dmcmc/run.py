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

import hashlib
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..assets import shipped_model
from ..errors import DdmkitError
from .noise_classifier import ORACLE, NoiseLevelClassifier, check_compatible, load_classifier, oracle_classifier, paths_for
from .diagnostics import output_mixing
from .dlg import NFE_KEYS, ChainState, DLGConfig, DLGSampler, RoundOutput, nfe_summary

LANGEVIN_CLIP = {"model": None, "on": True, "off": False}  # --langevin-clip -> DLGConfig.langevin_clip

# Called as AFTER_ROUND(output, state) once a round's part and state are saved (tests use it to
# simulate an interruption).
AFTER_ROUND: Callable[[RoundOutput, ChainState], None] | None = None


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


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


LAYOUT_FILE = "dlg-workers.json"


def state_file(parts: Path, rank: int, world: int) -> Path:
    """The chain-state file of one worker: parts/chains.npz for one process (as before scale-out),
    parts/chains-rank<k>-of-<n>.npz for worker k of n."""
    return parts / ("chains.npz" if world == 1 else f"chains-rank{rank}-of-{world}.npz")


def check_layout(parts: Path, world: int) -> None:
    """A DLG run resumes only with the number of workers it started with (the chains are split)."""
    import json

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


def run_dmcmc_sample(args, denoiser, base_settings: dict, device: str, dist=None) -> int:
    """The --dmcmc branch of `ddmkit sample` (arguments validated before anything is written).

    With several workers (`dist`), worker k of n runs the chains block(chains, k, n) and fills the
    sample indices block(num, k, n) (both contiguous, ddmkit.distributed.block), keeping its own
    chain state; rank 0 merges the parts and writes the manifest with the global chain id of every
    sample. A run resumes only with the number of workers it started with."""
    from .. import __version__
    from ..distributed import Dist, block
    from ..io import atomic_write_json
    from ..models.loading import model_identity
    from ..outputs import PartStore, write_sample_folder

    dist = dist or Dist(device=device)
    out = Path(args.out)
    options = base_settings["options"]
    config = DLGConfig(integrator=args.integrator, steps=args.steps, eta=args.dlg_eta, n_skip=args.n_skip,
                       sigma_step=args.sigma_step, select=args.select, burn_in=args.burn_in,
                       tweedie=not args.no_tweedie, tweedie_sigma=getattr(args, "tweedie_sigma", None), options=options,
                       langevin_clip=LANGEVIN_CLIP[getattr(args, "langevin_clip", "model")])
    config.validate()
    chains = args.chains or min(args.num, args.batch_size)
    if chains < 1:
        raise DdmkitError(f"--chains must be >= 1, got {chains}")
    W, rank = dist.world_size, dist.rank
    if chains < W:
        raise DdmkitError(f"{chains} DLG chains cannot be split over {W} workers; give --chains >= {W}")
    identity = base_settings.get("model_identity") or model_identity(denoiser)
    clf, clf_path = resolve_classifier(args.noise_classifier, args.model, denoiser, identity, device=device)
    clf.set_precision(getattr(args, "classifier_dtype", "fp32"))
    if getattr(args, "classifier_compile", False):
        clf.compile()
    settings = {**base_settings, "dmcmc": {**config.to_json(denoiser), "chains": chains,
                                           "noise_classifier": clf_path,
                                           "noise_classifier_sha256": None if clf_path == ORACLE else file_sha256(clf_path),
                                           "noise_classifier_dtype": clf.dtype}}
    store = PartStore(out, settings)
    check_layout(store.dir, W)
    c_lo, c_hi = block(chains, rank, W)
    i_lo, i_hi = block(args.num, rank, W)
    my_num = i_hi - i_lo
    sampler = DLGSampler(denoiser, clf, config, seed=args.seed, chain_ids=range(c_lo, c_hi))
    state_path = state_file(store.dir, rank, W)
    state = ChainState.load(state_path) if state_path.is_file() else None
    resumed_round = state.round if state is not None else None
    store.start()
    if dist.is_main and not (store.dir / LAYOUT_FILE).is_file():
        atomic_write_json(store.dir / LAYOUT_FILE, {"world_size": W})
    dist.barrier()
    t0 = time.time()

    def on_state(s: ChainState) -> None:
        s.save(state_path)

    def on_round(o: RoundOutput, s: ChainState) -> None:
        if len(o.index):
            store.write(o.index + i_lo, o.x.numpy(), chain=o.chain, sigma_star=o.sigma_star.astype(np.float64),
                        round=np.full(len(o.index), o.round, dtype=np.int64))
        s.save(state_path)
        if AFTER_ROUND is not None:
            AFTER_ROUND(o, s)

    if my_num > 0 or state is not None:
        state = sampler.run(my_num, state=state, on_round=on_round, on_state=on_state,
                            progress=not args.quiet and dist.is_main)
    else:  # more workers than samples: this one has nothing to do
        state = ChainState(torch.zeros((0,)), torch.zeros(0), torch.zeros(0, dtype=torch.int64),
                           outputs_per_chain=torch.zeros(c_hi - c_lo, dtype=torch.int64))
    report = {"rank": rank, "device": device, "chains": [c_lo, c_hi], "indices": [i_lo, i_hi],
              "nfe": state.nfe, "events": state.events, "outputs_per_chain": state.outputs_per_chain.tolist(),
              "resumed_from_round": resumed_round, "rounds": state.round, "seconds": round(time.time() - t0, 3)}
    reports = dist.all_gather_object(report)
    dist.barrier()  # every part is on disk
    if not dist.is_main:
        return 0
    merged = store.gather(range(args.num), shared_hint=dist.enabled)
    nfe_counts = merge_nfe([r["nfe"] for r in reports])
    nfe = nfe_summary(_Tally(nfe_counts), chains)
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
        "sampler_settings": {**config.to_json(denoiser), "chains": chains, "eta_effective": sampler.eta,
                             "sigma_lo": sampler.sigma_lo, "tweedie_sigma": sampler.tweedie_sigma,
                             "divergence_limit_rms": sampler.limit, "options_effective": sampler.options,
                             "noise_classifier_held_out": clf.meta.get("held_out")},
        "divergence_events": events,
        "mixing": output_mixing(merged["x"], merged["chain"], merged["sigma_star"]),
        "chain": merged["chain"].tolist(),
        "outputs_per_chain": [n for r in reports for n in r["outputs_per_chain"]],
        "resumed_from_round": resumed_round,
        "seconds": round(time.time() - t0, 3),
        "world_size": W,
        "ranks": [{k: v for k, v in r.items() if k not in ("nfe", "events", "outputs_per_chain")} for r in reports],
    }
    write_sample_folder(out, merged["x"], merged["index"], manifest, inner_range, denoiser.is_image,
                        extra={"chain": merged["chain"], "sigma_star": merged["sigma_star"]})
    store.remove()
    ev = f", {len(events)} divergence restarts" if events else ""
    workers = f" on {W} workers" if W > 1 else ""
    print(f"{args.num} samples by DLG ({chains} chains{workers}), {nfe['per_output']:g} NFE each "
          f"+ {nfe['burn_in_amortised_per_output']:.3g} burn-in{ev} -> {out}")
    ess = manifest["mixing"]["ess_per_output"]["median"]
    if ess is not None and ess < 0.5:
        print(f"ddmkit: note: {ess:.2f} effective samples per output (manifest 'mixing'): successive outputs of a "
              "chain are near-copies; use more --chains (fewer outputs per chain)", file=sys.stderr)
    return 0


class _Tally:
    """The part of a ChainState that `nfe_summary` reads."""

    def __init__(self, nfe: dict):
        self.nfe = nfe


def merge_nfe(tallies: list[dict]) -> dict:
    """NFE tallies of several workers' chains as one run's: counts add up; the burn-in per chain is the
    same everywhere (max); rounds ran in parallel (max)."""
    out = {k: 0 for k in NFE_KEYS}
    for t in tallies:
        for k in NFE_KEYS:
            v = t.get(k, 0)
            out[k] = max(out[k], v) if k in ("burn_in_per_chain", "rounds") else out[k] + v
    return out
