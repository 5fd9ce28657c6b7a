"""`ddmkit demo`: one HTML page that shows ddmkit working, section by section, under one progress bar.

Sections (each a `Section`: a title, the number of progress steps it takes at a `DemoSize`, and a
function of the shared `DemoRun` returning its intro line and HTML body):
1. every integrator on an exact 2-D Gaussian mixture, over the true density, with NFE and error;
2. the default faces model: sample grids of a few integrators at a few NFE budgets (the same x_T in
   every grid), FD-faces against the noise floor at the same n, and FD-faces against NFE;
3. Denoising MCMC (DLG, Kim & Ye 2023, Alg. 1) beside plain kar1 at equal NFE per output;
4. attribute editing (BoundaryDiffusion, Zhu et al. 2023): source | reconstruction | edit per face.
Three sizes: `DEFAULT` (a first run: minutes on a 2-core CPU), `FULL` (more samples and settings) and
`QUICK` (the end-to-end test). Every number on the page is computed in the run that writes it.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from .assets import shipped_model
from .data.faces import ATTRIBUTES, sample_faces, to_tensor_range
from .demo_page import columns, esc, figure, line_plot, page, pyplot, section, table
from .dmcmc import ChainState, DLGConfig, DLGSampler, load_classifier, nfe_summary
from .editing import EditPlan, EditSettings, edit_images, parse_distance, resolve_boundary, shipped_boundaries
from .errors import DdmkitError
from .io import atomic_write_bytes
from .metrics.evaluate import REFERENCE_NUM, check_images, evaluate_images, sample_statistics
from .mixtures import GaussianMixture, GMMDenoiser, frechet_to_mixture
from .models.loading import load_model
from .outputs import image_grid, save_png, to_uint8
from .sampling import SampleResult, sample, start_sigma


@dataclass(frozen=True)
class DLGBudget:
    """One DLG-vs-plain comparison: plain kar1 with `plain_steps` (2N - 3 + 1 NFE) against DLG with
    `n_skip` Langevin-Gibbs steps, kar1 with `dlg_steps` and Tweedie (n_skip + 2N - 3 + 1 NFE per output)."""

    label: str
    plain_steps: int
    dlg_steps: int
    n_skip: int
    eta: float


# the settings benchmarks/dmcmc_faces.py selected for kar1 at 10 and 20 NFE on this model (tuned on seed 0)
DLG_BUDGETS = (DLGBudget("~10 NFE", 6, 5, 2, 0.1), DLGBudget("~20 NFE", 11, 9, 4, 0.1))
# (integrator, steps), ordered in pairs at equal NFE: the page shows each pair side by side
FACES_SETTINGS = (("ddim", 10), ("kar1", 6), ("ddim", 20), ("kar1", 11), ("kar2", 11), ("kar1", 26))
# every integrator, at a moderate budget each
GMM_SETTINGS = (("kar1", 12), ("kar2", 12), ("rd", 40), ("em", 40), ("pf", 40), ("rk45", 1), ("ddim", 20),
                ("dpmpp_2m", 20), ("unipc", 20))
EDIT_SEED_BASE = 60_000_000  # held-out faces to edit: seed EDIT_SEED_BASE + the attribute's index


@dataclass(frozen=True)
class DemoSize:
    """How much the demo computes: samples per point, settings, DLG chains (outputs per chain =
    dlg_n / dlg_chains), faces edited per attribute (`edit_attributes` None: every shipped boundary)."""

    name: str
    gmm_n: int
    faces_n: int
    faces_settings: tuple[tuple[str, int], ...]
    dlg_n: int
    dlg_chains: int
    dlg_budgets: tuple[DLGBudget, ...]
    edit_k: int
    edit_attributes: tuple[str, ...] | None = None
    show: int = 32  # tiles per sample grid (8 columns)


QUICK = DemoSize("quick", 500, 16, FACES_SETTINGS[:2], 16, 8, DLG_BUDGETS[:1], 2)
DEFAULT = DemoSize("default", 1000, 64, tuple(FACES_SETTINGS[i] for i in (0, 1, 3)), 64, 32, DLG_BUDGETS, 4)
FULL = DemoSize("full", 3000, 256, FACES_SETTINGS, 256, 64, DLG_BUDGETS, 8)
SIZES = {s.name: s for s in (QUICK, DEFAULT, FULL)}


@dataclass
class DemoRun:
    """What the sections share: the folder, the size, the progress bar, the model and its plain samples
    (one `sample` call per setting: a setting two sections show is sampled once, on the same seeds)."""

    out: Path
    size: DemoSize
    bar: Any
    where: str = ""
    _model: Any = None
    _plain: dict = field(default_factory=dict)

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """One step of the progress bar: shows `what` while it runs, counts it when done."""
        self.bar.set_description_str(f"demo {self.where}: {what}")
        yield
        self.bar.update(1)

    def model(self):
        if self._model is None:
            self._model = load_model("default")
        return self._model

    def plain(self, integrator: str, steps: int, n: int) -> tuple[SampleResult, dict]:
        """n plain samples of the default model at seed 0 (sample i from x_T of seed (0, i)) and their metrics."""
        key = (integrator, steps, n)
        if key not in self._plain:
            res = sample(self.model(), integrator=integrator, steps=steps, num=n, batch_size=64, seed=0)
            self._plain[key] = (res, evaluate_images(res.x.numpy(), "faces"))
        return self._plain[key]

    def grid(self, name: str, x: torch.Tensor | np.ndarray, ncols: int = 8, count: int | None = None) -> str:
        """Save the first `count` (default size.show) images of x as a grid PNG; returns its file name."""
        x = np.asarray(x)[: count or self.size.show]
        save_png(self.out / name, image_grid(to_uint8(x, (-1.0, 1.0)), ncols=ncols), scale=3)
        return name


@dataclass(frozen=True)
class Section:
    title: str
    steps: Callable[[DemoSize], int]
    run: Callable[[DemoRun], tuple[str, str]]  # -> (intro line, body HTML)


def demo_mixture() -> GaussianMixture:
    """The 2-D demo mixture: five components with unequal weights and shapes."""
    return GaussianMixture(
        torch.tensor([0.35, 0.25, 0.2, 0.12, 0.08]),
        torch.tensor([[-3.0, -2.0], [3.0, -1.5], [0.0, 3.0], [-3.5, 3.0], [3.5, 3.5]]),
        torch.tensor([[0.6, 0.3], [0.35, 0.7], [0.8, 0.4], [0.3, 0.3], [0.5, 0.25]]),
    )


def _gmm_panel(ax, mixture: GaussianMixture, x: torch.Tensor, color: str, title: str) -> None:
    g = torch.linspace(-6, 6, 200)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    dens = mixture.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).exp().reshape(200, 200).numpy()
    ax.contourf(gx, gy, dens, levels=30, cmap="Blues")
    ax.scatter(x[:, 0], x[:, 1], s=1.5, c=color, alpha=0.5)
    ax.set_title(title)
    ax.set_xlim(-6, 6), ax.set_ylim(-6, 6), ax.set_aspect("equal")


def section_gmm(run: DemoRun) -> tuple[str, str]:
    mixture = demo_mixture()
    den, n = GMMDenoiser(mixture), run.size.gmm_n
    exact, _ = mixture.sample(n, torch.Generator().manual_seed(0))
    floor = frechet_to_mixture(exact, mixture)
    plt = pyplot()
    cols = -(-(len(GMM_SETTINGS) + 1) // 2)  # the integrators and the exact samples, in two rows
    fig, axes = plt.subplots(2, cols, figsize=(4 * cols, 8))
    rows = []
    for ax, (name, steps) in zip(axes.flat, GMM_SETTINGS):
        with run.step(f"{name} N={steps}"):
            opts = {"rtol": 1e-3, "atol": 1e-3} if name == "rk45" else {}
            t0 = time.time()
            res = sample(den, integrator=name, steps=steps, num=n, batch_size=n, seed=0, options=opts)
            secs = time.time() - t0
            fd = frechet_to_mixture(res.x, mixture)
            w = torch.bincount(mixture.assign(res.x), minlength=mixture.num_components).double() / n
            rows.append([name, steps, n, res.nfe_per_sample, fd, (w - mixture.weights).abs().max().item(), secs])
            _gmm_panel(ax, mixture, res.x, "crimson", f"{name}: NFE {res.nfe_per_sample:g}, FD {fd:.3f}")
    with run.step("plot"):
        _gmm_panel(axes.flat[-1], mixture, exact, "black", f"exact samples: FD {floor:.3f} (noise floor)")
        fig.tight_layout()
        fig.savefig(run.out / "gmm.png", dpi=80)
        plt.close(fig)
    header = ["integrator", "steps N", "n", "NFE (measured)", "Frechet distance to truth", "max weight error",
              "seconds"]
    intro = (f"Each integrator draws n = {n} samples (red) over the true density (blue); the Frechet distance "
             f"of {n} exact samples is the noise floor at this n: {floor:.4f}.")
    return intro, table(header, rows) + figure("gmm.png", "samples over the true density, one panel per integrator")


def section_faces(run: DemoRun) -> tuple[str, str]:
    n = run.size.faces_n
    rows, figs, curves, floor = [], [], {}, None
    for name, steps in run.size.faces_settings:
        with run.step(f"{name} N={steps}"):
            res, m = run.plain(name, steps, n)
            fname = run.grid(f"faces_{name}_{steps}.png", res.x)
        nfe, fd, floor = res.nfe_per_sample, m["fd"], (m["fd_noise_floor"], m["fd_noise_floor_std"])
        conf = min(m["confident_fraction"].values())
        rows.append([name, steps, n, nfe, fd, f"{floor[0]:.4g} +- {floor[1]:.2g}", conf])
        figs.append(figure(fname, f"{esc(name)}, N = {steps}: NFE {nfe:g}, FD-faces {fd:.4g}"))
        curves.setdefault(name, []).append((nfe, fd))
    with run.step("plot"):
        line_plot(run.out / "faces_fd_vs_nfe.png", curves, "NFE per sample", "FD-faces",
                  f"FD-faces vs NFE (n = {n} per point)", floor=(floor[0], f"real faces at n = {n}"), logy=True)
    header = ["integrator", "steps N", "n", "NFE (measured)", "FD-faces", "noise floor at n (mean +- std)",
              "min confident fraction"]
    intro = (f"n = {n} samples per setting; tile i of every grid starts from the same x_T (seed 0, sample i), "
             "so grids side by side differ only by the integrator and its budget. FD-faces: Frechet distance on "
             f"the shipped attribute classifier's features against {REFERENCE_NUM:,} faces of the data set; "
             "the noise floor is what real faces score at the same n.")
    body = table(header, rows) + columns(figs + [figure("faces_fd_vs_nfe.png", "FD-faces against NFE")])
    return intro, body


def _dlg_row(budget: DLGBudget, name: str, n: int, nfe: float, burn: float, sig: float, m: dict) -> list:
    floor = f"{m['fd_noise_floor']:.4g} +- {m['fd_noise_floor_std']:.2g}"
    return [budget.label, name, n, nfe, burn, nfe + burn, sig, m["fd"], floor]


def _dlg(run: DemoRun, clf, b: DLGBudget, burned: dict) -> tuple[torch.Tensor, dict, np.ndarray]:
    """DLG samples at budget b: (x, NFE summary, sigma*). Budgets whose burn-in settings agree continue
    from one burn-in (`burned`, keyed by them); each one's NFE still counts that burn-in in full."""
    cfg = DLGConfig(integrator="kar1", steps=b.dlg_steps, n_skip=b.n_skip, eta=b.eta)
    sampler = DLGSampler(run.model(), clf, cfg, chains=run.size.dlg_chains, seed=0)
    key = (cfg.eta, cfg.burn_in, cfg.sigma_lo)
    if key not in burned:
        burned[key] = sampler.init_state()
    state: ChainState = copy.deepcopy(burned[key])
    outs: list = []
    sampler.run(run.size.dlg_n, state=state, on_round=lambda o, s: outs.append(o))
    x = torch.cat([o.x for o in outs])
    return x, nfe_summary(state, sampler.chains), np.concatenate([o.sigma_star for o in outs])


def section_dlg(run: DemoRun) -> tuple[str, str]:
    size, n = run.size, run.size.dlg_n
    clf = load_classifier(shipped_model("default").noise_classifier)
    rows, figs, burned = [], [], {}
    curves: dict[str, list] = {"plain kar1": [], "DLG kar1 (per output)": [], "DLG kar1 (+ burn-in)": []}
    for b in size.dlg_budgets:
        with run.step(f"plain kar1 N={b.plain_steps}"):
            plain, pm = run.plain("kar1", b.plain_steps, n)
            pname = run.grid(f"dlg_plain_{b.plain_steps}.png", plain.x)
        with run.step(f"DLG {b.label}"):
            x, nf, sigma_star = _dlg(run, clf, b, burned)
            dm = evaluate_images(x.numpy(), "faces")
            dname = run.grid(f"dlg_dlg_{b.dlg_steps}_{b.n_skip}.png", x)
        nfe, burn = nf["per_output"], nf["burn_in_amortised_per_output"]
        sig_max = start_sigma(run.model())  # where plain sampling starts (the model's recorded start level)
        rows.append(_dlg_row(b, "plain", n, plain.nfe_per_sample, 0.0, sig_max, pm))
        rows.append(_dlg_row(b, "DLG", n, nfe, burn, float(np.median(sigma_star)), dm))
        figs.append(figure(pname, f"{b.label}: plain kar1 N = {b.plain_steps}, NFE {plain.nfe_per_sample:g}, "
                                  f"FD-faces {pm['fd']:.4g}"))
        figs.append(figure(dname, f"{b.label}: DLG, n_skip {b.n_skip} + kar1 N = {b.dlg_steps} + Tweedie, NFE "
                                  f"{nfe:g} per output (+ {burn:.3g} burn-in), FD-faces {dm['fd']:.4g}"))
        curves["plain kar1"].append((plain.nfe_per_sample, pm["fd"]))
        curves["DLG kar1 (per output)"].append((nfe, dm["fd"]))
        curves["DLG kar1 (+ burn-in)"].append((nfe + burn, dm["fd"]))
    with run.step("plot"):
        line_plot(run.out / "dlg_fd_vs_nfe.png", curves, "NFE per sample", "FD-faces",
                  f"DLG vs plain kar1 (n = {n} per point)", floor=(pm["fd_noise_floor"], f"real faces at n = {n}"))
    return _dlg_intro(size, len(burned) < len(size.dlg_budgets)), _dlg_body(rows, figs)


def _dlg_intro(size: DemoSize, shared_burn_in: bool) -> str:
    c = size.dlg_chains
    shared = (" Both budgets continue from one burn-in of the chains (same eta); each row counts it in full."
              if shared_burn_in else "")
    return (f"n = {size.dlg_n} samples per sampler, base seed 0. DLG runs {c} persistent chains in (x, sigma), "
            f"{size.dlg_n / c:g} outputs per chain (consecutive outputs of a chain are n_skip Langevin-Gibbs steps "
            "apart, so correlated); each output starts kar1 at its chain's own noise level sigma*." + shared +
            " <b>Same seeds</b>: left and right tile i are output i of each sampler at base seed 0. Plain tile i "
            f"starts from x_T of seed (0, i); DLG tile i is chain i mod {c} in round i div {c}, and a chain starts "
            "from its own seed-0 stream and burn-in, not from the plain sampler's x_T: pairs are matched by seed "
            "and index and need not look alike.")


def _dlg_body(rows: list, figs: list[str]) -> str:
    header = ["budget", "sampler", "n", "NFE per output (measured)", "burn-in NFE per output (amortised)",
              "NFE incl. burn-in", "median sigma* (start level)", "FD-faces", "noise floor at n (mean +- std)"]
    note = ("<p class='note'>Every integrator and diffusers' solvers on many more samples per point: "
            "<code>benchmarks/dmcmc_faces.py</code> (results in <code>benchmarks/results/</code>).</p>")
    return table(header, rows) + columns(figs + [figure("dlg_fd_vs_nfe.png", "FD-faces against NFE")]) + note


def edit_attributes(size: DemoSize) -> list[str]:
    """The attributes the editing section edits: shipped boundaries, in `ATTRIBUTES` order."""
    shipped = shipped_boundaries()
    wanted = size.edit_attributes if size.edit_attributes is not None else ATTRIBUTES
    return [a for a in ATTRIBUTES if a in shipped and a in wanted]


def _edit_groups(names: list[str], model) -> list[list[tuple[str, Any]]]:
    """The boundaries of `names`, grouped by mixing step (one inversion serves every edit of a group)."""
    groups: dict[Any, list] = {}
    for attr in names:
        boundary = resolve_boundary(attr, model)
        groups.setdefault(boundary.step, []).append((attr, boundary))
    return list(groups.values())


def _edit_group(run: DemoRun, group: list[tuple[str, Any]]) -> tuple[list, list[str]]:
    """Invert size.edit_k held-out faces without any of the group's attributes once, then edit each
    attribute across its boundary; returns the table rows and one figure per attribute."""
    k, names = run.size.edit_k, [a for a, _ in group]
    images, _ = sample_faces(k, seed=EDIT_SEED_BASE, fixed={a: 0 for a in names})
    plans = [EditPlan([(b, parse_distance("1x"))]) for _, b in group]
    res = edit_images(run.model(), to_tensor_range(images), plans, EditSettings(seed=0))
    nfe = res.nfe.to_json()
    per_face = nfe["inversion"] + nfe["reconstruction"] + nfe["per_edit"]  # what one attribute's strip costs
    rows, figs = [], []
    for j, (attr, boundary) in enumerate(group):
        edit = res.edits[j]
        strip = np.stack([res.source, res.reconstruction, edit], 1).reshape(-1, *res.source.shape[1:])
        fname = run.grid(f"edit_{attr}.png", strip, ncols=3, count=len(strip))
        share = [sample_statistics(check_images(x, "faces"), "faces")[1]["attribute_frequency"][attr]
                 for x in (res.source, res.reconstruction, edit)]
        rows.append([attr, boundary.t_m, k, nfe["inversion"], nfe["reconstruction"], nfe["per_edit"], per_face,
                     res.reconstruction_error["psnr_db"], *share])
        figs.append(figure(fname, f"+{esc(attr)}: each row one face: source | reconstruction (eta 0, no edit) | "
                                  f"edit across the {esc(attr)} boundary"))
    return rows, figs


def _edit_steps(size: DemoSize) -> int:
    """One progress step per mixing step among the boundaries edited (1 when they cannot be read)."""
    try:
        return max(1, len({resolve_boundary(a).step for a in edit_attributes(size)}))
    except DdmkitError:
        return 1


def section_editing(run: DemoRun) -> tuple[str, str]:
    names = edit_attributes(run.size)
    if not names:
        raise DdmkitError("no boundaries shipped yet (scripts/fit_default_boundaries.sh)")
    rows, figs = [], []
    for group in _edit_groups(names, run.model()):
        with run.step(f"invert {run.size.edit_k} faces, edit {len(group)} attributes"):
            r, f = _edit_group(run, group)
        rows += r
        figs += f
    k = run.size.edit_k
    header = ["attribute", "mixing step t_m", "n faces", "NFE inversion", "NFE reconstruction", "NFE edit",
              "NFE per face, one attribute", "reconstruction PSNR (dB)", "share with it: source", "reconstruction",
              "edit"]
    intro = (f"{k} held-out faces without any of these attributes are DDIM-inverted once to the mixing step t_m "
             "(shared by all boundaries of one t_m); for each attribute they are moved across its shipped SVM "
             "boundary in z and h to its recommended distance and denoised with eta = 1. 'share with it': the "
             f"attribute classifier's share (p >= 0.5) of the {k} faces.")
    return intro, table(header, rows) + columns(figs, cls="cols3")


SECTIONS = (
    Section(f"{len(GMM_SETTINGS)} integrators on an exact 2-D Gaussian mixture", lambda s: len(GMM_SETTINGS) + 1,
            section_gmm),
    Section("The default faces model (a DDPM trained by ddmkit, shipped in the package)",
            lambda s: len(s.faces_settings) + 1, section_faces),
    Section("Denoising MCMC (DLG) against plain sampling at equal NFE", lambda s: 2 * len(s.dlg_budgets) + 1,
            section_dlg),
    Section("Attribute editing (BoundaryDiffusion, single step at the mixing step)",
            _edit_steps, section_editing),
)


def total_steps(size: DemoSize) -> int:
    """The progress bar's length at this size."""
    return sum(s.steps(size) for s in SECTIONS)


def _run_section(run: DemoRun, number: int, sec: Section) -> tuple[str, float]:
    end = run.bar.n + sec.steps(run.size)
    run.where = f"{number}/{len(SECTIONS)}"
    t0 = time.time()
    try:
        intro, body = sec.run(run)
    except DdmkitError as e:
        intro, body = "", f"<p>Not available: {esc(e)}</p>"
        run.bar.update(end - run.bar.n)  # the steps it did not take
    return section(number, sec.title, intro, body), time.time() - t0


def run_demo(out: str | Path = "ddmkit-demo", size: DemoSize = DEFAULT, progress: bool = True) -> Path:
    """Run every section at `size` under one progress bar and write OUT/index.html; returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with tqdm(total=total_steps(size), desc="demo", unit="step", disable=not progress) as bar:
        run = DemoRun(out, size, bar)
        parts, times = [], []
        for number, sec in enumerate(SECTIONS, 1):
            html_part, secs = _run_section(run, number, sec)
            parts.append(html_part)
            times.append([f"{number}. {sec.title}", secs])
        bar.set_description_str("demo")
    device = "CUDA" if torch.cuda.is_available() else "CPU"
    threads = torch.get_num_threads()
    header = (f"in {time.time() - t0:.0f} s on {device} ({threads} thread{'s' if threads != 1 else ''}), size "
              f"<b>{size.name}</b> (default: a first run; <code>--full</code>: {FULL.faces_n} faces per point, "
              "every setting).")
    footer = "<section><h2>Time per section</h2>" + table(["section", "seconds"], times) + "</section>"
    atomic_write_bytes(out / "index.html", page(header, "\n".join(parts) + footer).encode())
    return out / "index.html"
