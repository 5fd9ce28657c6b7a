"""`ddmkit sample --dmcmc`: DLG sampling into a sample folder, resumable after any interruption.

Folder layout (as for plain sampling, `ddmkit.outputs`), plus while running:
    OUT/parts/part-<first>-<last>.npz   the outputs of one round: index, x, chain, sigma_star, round
    OUT/parts/chains.npz                the chain state after the last finished round (atomic)
After each round the round's part is written first, then the state. If the run is killed (even
kill -9) anywhere, rerunning the same command loads the last state; a round whose part was written
but whose state was not is recomputed identically (its random streams depend on the saved state
only) and its part overwritten, so no sample is lost or duplicated.
The finished folder has samples.npz with arrays x, index, chain (the chain that made each sample)
and sigma_star (the sigma it was handed to the integrator at), and manifest.json with the NFE split
and the divergence events.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DdmkitError
from .classifier import NoiseLevelClassifier, check_compatible, load_classifier, paths_for
from .dlg import ChainState, DLGConfig, DLGSampler, RoundOutput, nfe_summary

SHIPPED_CLASSIFIERS = {"default": "faces", "faces": "faces", "digits": "digits"}

# Called as AFTER_ROUND(output, state) once a round's part and state are saved (tests use it to
# simulate an interruption).
AFTER_ROUND: Callable[[RoundOutput, ChainState], None] | None = None


def shipped_classifier_path(model_spec: str | None) -> Path | None:
    from ..models.loading import WEIGHTS_DIR

    name = SHIPPED_CLASSIFIERS.get(model_spec or "default")
    return WEIGHTS_DIR / f"{name}_noise_classifier" if name else None


def resolve_classifier(path: str | None, model_spec: str | None, denoiser, identity: dict,
                       device="cpu") -> tuple[NoiseLevelClassifier, str]:
    """The classifier given by --noise-classifier, else the one shipped for the model; checked
    against the model (DdmkitError naming the fix otherwise)."""
    if path is None:
        shipped = shipped_classifier_path(model_spec)
        if shipped is None:
            raise DdmkitError(
                f"--dmcmc needs a noise-level classifier for model {model_spec!r}: train one with "
                f"`ddmkit noise-classifier train --model {model_spec} --out PATH` and pass --noise-classifier PATH"
            )
        path = str(shipped)
    clf = load_classifier(path, device=device)
    check_compatible(clf, denoiser, identity, path=str(path))
    return clf, str(paths_for(path)[0])


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_dmcmc_sample(args, denoiser, base_settings: dict, device: str) -> int:
    """The --dmcmc branch of `ddmkit sample` (arguments validated before anything is written)."""
    from .. import __version__
    from ..models.loading import model_identity
    from ..outputs import PartStore, write_sample_folder

    out = Path(args.out)
    options = base_settings["options"]
    config = DLGConfig(integrator=args.integrator, steps=args.steps, eta=args.dlg_eta, n_skip=args.n_skip,
                       sigma_step=args.sigma_step, select=args.select, burn_in=args.burn_in,
                       tweedie=not args.no_tweedie, tweedie_sigma=getattr(args, "tweedie_sigma", None), options=options)
    config.validate()
    chains = args.chains or min(args.num, args.batch_size)
    if chains < 1:
        raise DdmkitError(f"--chains must be >= 1, got {chains}")
    identity = base_settings.get("model_identity") or model_identity(denoiser)
    clf, clf_path = resolve_classifier(args.noise_classifier, args.model, denoiser, identity, device=device)
    settings = {**base_settings, "dmcmc": {**config.to_json(denoiser), "chains": chains,
                                           "noise_classifier": clf_path, "noise_classifier_sha256": file_sha256(clf_path)}}
    store = PartStore(out, settings)
    sampler = DLGSampler(denoiser, clf, config, chains=chains, seed=args.seed)
    state_path = store.dir / "chains.npz"
    state = ChainState.load(state_path) if state_path.is_file() else None
    resumed_round = state.round if state is not None else None
    store.start()
    t0 = time.time()

    def on_state(s: ChainState) -> None:
        s.save(state_path)

    def on_round(o: RoundOutput, s: ChainState) -> None:
        if len(o.index):
            store.write(o.index, o.x.numpy(), chain=o.chain, sigma_star=o.sigma_star.astype(np.float64),
                        round=np.full(len(o.index), o.round, dtype=np.int64))
        s.save(state_path)
        if AFTER_ROUND is not None:
            AFTER_ROUND(o, s)

    state = sampler.run(args.num, state=state, on_round=on_round, on_state=on_state, progress=not args.quiet)
    merged = store.gather(range(args.num))
    nfe = nfe_summary(state, chains)
    inner_range = getattr(denoiser, "data_range", None)
    manifest = {
        **settings,
        "ddmkit_version": __version__,
        "domain": getattr(denoiser, "domain", None),
        "data_range": list(inner_range) if inner_range else None,
        "sample_shape": list(denoiser.sample_shape),
        "device": device,
        "nfe_per_sample": nfe["per_output"],
        "nfe": nfe,
        "sampler_settings": {**config.to_json(denoiser), "chains": chains, "eta_effective": sampler.eta,
                             "sigma_lo": sampler.sigma_lo, "tweedie_sigma": sampler.tweedie_sigma,
                             "divergence_limit_rms": sampler.limit, "options_effective": sampler.options,
                             "noise_classifier_held_out": clf.meta.get("held_out")},
        "divergence_events": state.events,
        "chain": merged["chain"].tolist(),
        "outputs_per_chain": state.outputs_per_chain.tolist(),
        "resumed_from_round": resumed_round,
        "seconds": round(time.time() - t0, 3),
    }
    write_sample_folder(out, merged["x"], merged["index"], manifest, inner_range, denoiser.is_image,
                        extra={"chain": merged["chain"], "sigma_star": merged["sigma_star"]})
    store.remove()
    events = f", {len(state.events)} divergence restarts" if state.events else ""
    print(f"{args.num} samples by DLG ({chains} chains), {nfe['per_output']:g} NFE each "
          f"+ {nfe['burn_in_amortised_per_output']:.3g} burn-in{events} -> {out}")
    return 0
