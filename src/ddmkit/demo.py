"""`ddmkit demo`: one HTML page that shows ddmkit working, section by section.

Sections (each a function `section(out: Path, quick: bool) -> str | None` returning an HTML fragment):
1. the seven integrators on an exact 2-D Gaussian mixture, over the true density, with NFE and error;
2. the default faces model: sample grids of a few integrators at a few NFE budgets, FD-faces and
   attribute frequencies, and FD-faces against NFE;
later capabilities append their own sections to `SECTIONS` (Denoising MCMC, editing).
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data.faces import ATTRIBUTES, sample_faces, to_tensor_range
from .editing import EditPlan, EditSettings, edit_images, parse_distance, resolve_boundary, shipped_boundaries
from .errors import DdmkitError
from .io import atomic_write_bytes
from .models.loading import load_model
from .outputs import image_grid, save_png, to_uint8


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def demo_mixture():
    """The 2-D demo mixture: five components with unequal weights and shapes."""
    from .mixtures import GaussianMixture

    return GaussianMixture(
        torch.tensor([0.35, 0.25, 0.2, 0.12, 0.08]),
        torch.tensor([[-3.0, -2.0], [3.0, -1.5], [0.0, 3.0], [-3.5, 3.0], [3.5, 3.5]]),
        torch.tensor([[0.6, 0.3], [0.35, 0.7], [0.8, 0.4], [0.3, 0.3], [0.5, 0.25]]),
    )


# (integrator, steps) at a moderate budget each
GMM_SETTINGS = [("kar1", 12), ("kar2", 12), ("rd", 40), ("em", 40), ("pf", 40), ("rk45", 1), ("ddim", 20)]


def section_gmm(out: Path, quick: bool) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .mixtures import GMMDenoiser, frechet_to_mixture
    from .sampling import sample

    mixture = demo_mixture()
    den = GMMDenoiser(mixture)
    n = 1000 if quick else 3000
    g = torch.linspace(-6, 6, 200)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    dens = mixture.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).exp().reshape(200, 200).numpy()
    exact, _ = mixture.sample(n, torch.Generator().manual_seed(0))
    floor = frechet_to_mixture(exact, mixture)
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    rows = []
    for ax, (name, steps) in zip(axes.flat, GMM_SETTINGS):
        opts = {"rtol": 1e-3, "atol": 1e-3} if name == "rk45" else {}
        t0 = time.time()
        res = sample(den, integrator=name, steps=steps, num=n, batch_size=n, seed=0, options=opts)
        secs = time.time() - t0
        fd = frechet_to_mixture(res.x, mixture)
        w = torch.bincount(mixture.assign(res.x), minlength=mixture.num_components).double() / n
        werr = (w - mixture.weights).abs().max().item()
        rows.append([name, steps, res.nfe_per_sample, fd, werr, secs])
        ax.contourf(gx, gy, dens, levels=30, cmap="Blues")
        ax.scatter(res.x[:, 0], res.x[:, 1], s=1.5, c="crimson", alpha=0.5)
        ax.set_title(f"{name}: NFE {res.nfe_per_sample:g}, FD {fd:.3f}")
        ax.set_xlim(-6, 6), ax.set_ylim(-6, 6), ax.set_aspect("equal")
    ax = axes.flat[-1]
    ax.contourf(gx, gy, dens, levels=30, cmap="Blues")
    ax.scatter(exact[:, 0], exact[:, 1], s=1.5, c="black", alpha=0.5)
    ax.set_title(f"exact samples: FD {floor:.3f} (noise floor)")
    ax.set_xlim(-6, 6), ax.set_ylim(-6, 6), ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(out / "gmm.png", dpi=80)
    plt.close(fig)
    table = _table(["integrator", "steps N", "NFE (measured)", "Frechet distance to truth", "max weight error", "seconds"], rows)
    return (
        "<h2>1. Seven integrators on an exact 2-D Gaussian mixture</h2>"
        f"<p>{n} samples each, drawn over the true density (blue). The Frechet distance of {n} exact samples "
        f"is the noise floor: {floor:.4f}.</p>{table}<img src='gmm.png' width='100%'>"
    )


FACES_SETTINGS = [("ddim", 10), ("kar1", 6), ("ddim", 20), ("kar1", 11), ("kar2", 11), ("kar1", 26)]


def section_faces(out: Path, quick: bool) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .errors import DdmkitError
    from .models.loading import load_model
    from .outputs import image_grid, save_png, to_uint8
    from .sampling import sample

    try:
        den = load_model("default")
    except DdmkitError as e:
        return f"<h2>2. The default faces model</h2><p>Not available: {html.escape(str(e))}</p>"
    try:
        from .metrics.evaluate import evaluate_images
    except ImportError:  # the metrics module is optional for this section
        evaluate_images = None
    n = 64 if quick else 256
    settings = FACES_SETTINGS[:4] if quick else FACES_SETTINGS
    rows, curve = [], {}
    for name, steps in settings:
        res = sample(den, integrator=name, steps=steps, num=n, batch_size=64, seed=0)
        u8 = to_uint8(res.x.numpy(), (-1.0, 1.0))
        fname = f"faces_{name}_{steps}.png"
        save_png(out / fname, image_grid(u8[:36], ncols=6), scale=3)
        metrics = evaluate_images(res.x.numpy(), "faces") if evaluate_images else {}
        fd = metrics.get("fd", float("nan"))
        conf = min(metrics.get("confident_fraction", {"-": float("nan")}).values())
        rows.append([name, steps, res.nfe_per_sample, fd, conf, fname])
        curve.setdefault(name, []).append((res.nfe_per_sample, fd))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in curve.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
    ax.set_xlabel("NFE per sample"), ax.set_ylabel("FD-faces"), ax.set_yscale("log"), ax.legend()
    ax.set_title(f"FD-faces vs NFE ({n} samples per point)")
    fig.tight_layout()
    fig.savefig(out / "faces_fd_vs_nfe.png", dpi=90)
    plt.close(fig)
    table = _table(["integrator", "steps N", "NFE", "FD-faces", "min confident fraction"], [r[:5] for r in rows])
    grids = "".join(f"<figure><img src='{r[5]}'><figcaption>{r[0]}, NFE {r[2]:g}</figcaption></figure>" for r in rows)
    return (
        "<h2>2. The default faces model (a DDPM trained by ddmkit, shipped in the package)</h2>"
        f"<p>{n} samples per setting, same seeds. FD-faces: Frechet distance on the attribute classifier's "
        "features against 10,000 generated faces.</p>"
        f"{table}<div class='grids'>{grids}</div><img src='faces_fd_vs_nfe.png'>"
    )


def section_dlg(out: Path, quick: bool) -> str | None:
    """Denoising MCMC on the default model: the same seed with and without DLG at ~10 and ~20 NFE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .dmcmc import DLGConfig, dlg_sample, load_classifier
    from .errors import DdmkitError
    from .assets import shipped_model
    from .models.loading import load_model
    from .outputs import image_grid, save_png, to_uint8
    from .sampling import sample

    try:
        den = load_model("default")
        clf = load_classifier(shipped_model("default").noise_classifier)
    except DdmkitError as e:
        return f"<h2>3. Denoising MCMC</h2><p>Not available: {html.escape(str(e))}</p>"
    try:
        from .metrics.evaluate import evaluate_images
    except ImportError:
        evaluate_images = None
    n = 64 if quick else 256
    # (label, plain kar1 N, DLG kar1 N, n_skip, eta): plain 2N-3+1 NFE vs DLG n_skip + 2N-3 + 1 NFE; the DLG
    # settings are the ones benchmarks/dmcmc_faces.py selected for kar1 at 10 and 20 NFE on this model
    budgets = [("~10 NFE", 6, 5, 2, 0.1), ("~20 NFE", 11, 9, 4, 0.1)]
    rows, curve = [], {"plain": [], "DLG": []}
    for label, n_plain, n_dlg, skip, eta in budgets[:1] if quick else budgets:
        plain = sample(den, integrator="kar1", steps=n_plain, num=n, batch_size=64, seed=0)
        dlg = dlg_sample(den, clf, DLGConfig(integrator="kar1", steps=n_dlg, n_skip=skip, eta=eta), num=n,
                         chains=min(n, 64), seed=0)
        for name, x, nfe in (("plain", plain.x, plain.nfe_per_sample), ("DLG", dlg.x, dlg.nfe["per_output"])):
            fname = f"dlg_{name}_{label.strip('~').replace(' ', '')}.png"
            save_png(out / fname, image_grid(to_uint8(x[:36].numpy(), (-1.0, 1.0)), ncols=6), scale=3)
            fd = evaluate_images(x.numpy(), "faces", with_noise_floor=False)["fd"] if evaluate_images else float("nan")
            rows.append([label, name, nfe, fd, fname])
            curve[name].append((nfe, fd))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in curve.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"kar1 {name}")
    ax.set_xlabel("NFE per sample"), ax.set_ylabel("FD-faces"), ax.legend()
    fig.tight_layout()
    fig.savefig(out / "dlg_fd_vs_nfe.png", dpi=90)
    plt.close(fig)
    table = _table(["budget", "sampler", "NFE per sample", "FD-faces"], [r[:4] for r in rows])
    grids = "".join(f"<figure><img src='{r[4]}'><figcaption>{r[0]}: {r[1]} (NFE {r[2]:g})</figcaption></figure>"
                    for r in rows)
    return (
        "<h2>3. Denoising MCMC (DLG) against plain sampling at equal NFE</h2>"
        f"<p>{n} samples each, seed 0; DLG: kar1 started at each chain's own noise level after n_skip "
        "Langevin-Gibbs steps (burn-in reported separately). The full comparison, all seven integrators "
        "and diffusers' solvers on 1,000 samples per point: benchmarks/results/dmcmc_faces.png.</p>"
        f"{table}<div class='grids'>{grids}</div><img src='dlg_fd_vs_nfe.png'>"
    )


def section_editing(out: Path, quick: bool) -> str | None:
    """BoundaryDiffusion on the default model: one strip per attribute (source | reconstruction | edit)."""
    try:
        den = load_model("default")
    except DdmkitError as e:
        return f"<h2>4. Attribute editing</h2><p>Not available: {html.escape(str(e))}</p>"
    names = [a for a in ATTRIBUTES if a in shipped_boundaries()]
    if not names:
        return "<h2>4. Attribute editing</h2><p>No boundaries shipped yet (scripts/fit_default_boundaries.sh).</p>"
    k = 3 if quick else 4
    figs = []
    for attr in names:
        try:
            boundary = resolve_boundary(attr, den)
        except DdmkitError as e:
            figs.append(f"<p>{html.escape(attr)}: {html.escape(str(e))}</p>")
            continue
        images, _ = sample_faces(k, seed=60_000_000 + ATTRIBUTES.index(attr), fixed={attr: 0})
        x = to_tensor_range(images)
        res = edit_images(den, x, EditPlan([(boundary, parse_distance("1x"))]), EditSettings(seed=0))
        rows = np.concatenate([res.source, res.reconstruction, res.edits[0]])
        u8 = to_uint8(rows, (-1.0, 1.0))
        fname = f"edit_{attr}.png"
        save_png(out / fname, image_grid(u8, ncols=k), scale=3)
        figs.append(f"<figure><img src='{fname}'><figcaption>+{html.escape(attr)}: rows = source, "
                    f"reconstruction, edit (t_m {boundary.t_m}, {res.nfe.total} NFE per image)"
                    "</figcaption></figure>")
    return (
        "<h2>4. Attribute editing (BoundaryDiffusion, single step at the mixing step)</h2>"
        "<p>Held-out faces without the attribute, DDIM-inverted to t_m, moved across the shipped SVM boundary "
        "in z and h to its recommended distance, then denoised with eta = 1.</p>" + "".join(figs)
    )


SECTIONS: list[Callable[[Path, bool], str | None]] = [section_gmm, section_faces, section_dlg, section_editing]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>ddmkit demo</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} figure{{display:inline-block;margin:4px}}
img{{image-rendering:pixelated}}</style></head><body><h1>ddmkit demo</h1>
<p>Made by <code>ddmkit demo</code> in {seconds:.0f} s on {device}.</p>{body}</body></html>"""


def run_demo(out: str | Path = "ddmkit-demo", quick: bool = False, progress: bool = True) -> Path:
    """Run every section and write OUT/index.html; returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    parts = []
    for section in SECTIONS:
        if progress:
            print(f"demo: {section.__name__.removeprefix('section_')} ...", flush=True)
        fragment = section(out, quick)
        if fragment:
            parts.append(fragment)
    device = "CUDA" if torch.cuda.is_available() else "CPU"
    page = PAGE.format(seconds=time.time() - t0, device=device, body="\n".join(parts))
    atomic_write_bytes(out / "index.html", page.encode())
    return out / "index.html"
