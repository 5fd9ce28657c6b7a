"""`ddmkit noise-classifier`, `ddmkit sample --dmcmc` (mixture and a tiny VP UNet), resume, bad input,
`ddmkit tune-dmcmc`."""
import json
import shutil

import numpy as np
import pytest
import torch

from ddmkit.cli import main
from ddmkit.integrators import get_integrator
from ddmkit.dmcmc.dlg import ChainState

torch.set_num_threads(1)

MIX = {"weights": [0.5, 0.3, 0.2], "means": [[-3, 0], [3, 1], [0, 4]], "stds": [[0.5, 0.3], [0.4, 0.6], [0.3, 0.3]]}


@pytest.fixture(scope="module")
def gmm(tmp_path_factory):
    d = tmp_path_factory.mktemp("gmm")
    (d / "mix.json").write_text(json.dumps(MIX))
    assert main(["noise-classifier", "train", "--model", f"gmm:{d / 'mix.json'}", "--out", str(d / "clf"),
                 "--k", "32", "--steps", "60", "--batch-size", "64", "--checkpoint-every", "20", "--quiet"]) == 0
    meta = json.loads((d / "clf.json").read_text())
    assert meta["model_identity"]["sha256"] and meta["sigma_grid"]["k"] == 32
    assert 0 <= meta["held_out"]["top1_accuracy"] <= 1 and meta["held_out"]["mean_abs_dlog_sigma"] > 0
    assert not (d / "clf.ckpt").exists()
    return d


def _sample(d, out, *extra):
    return main(["sample", "--model", f"gmm:{d / 'mix.json'}", "--dmcmc", "--noise-classifier", str(d / "clf"),
                 "--integrator", "kar1", "--steps", "4", "--n-skip", "3", "--dlg-eta", "0.05", "--num", "50",
                 "--chains", "20", "--seed", "3", "--out", str(out), "--quiet", *extra])


def test_sample_dmcmc_writes_the_folder_and_the_nfe_split(gmm, tmp_path):
    assert _sample(gmm, tmp_path / "run") == 0
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    nfe = m["nfe"]
    assert m["nfe_per_sample"] == nfe["per_output"] == 3 + 5 + 1
    assert (nfe["mcmc_per_output"], nfe["integrator_per_output"], nfe["tweedie_per_output"]) == (3, 5, 1)
    assert nfe["burn_in_per_chain"] == 57 and nfe["burn_in_amortised_per_output"] == pytest.approx(57 * 20 / 50)
    assert nfe["classifier_calls"] == 21 + 3 * 3
    with np.load(tmp_path / "run" / "samples.npz") as z:
        assert z["x"].shape == (50, 2) and z["index"].tolist() == list(range(50))
        assert z["chain"].tolist() == m["chain"] == list(range(20)) * 2 + list(range(10))
        assert z["sigma_star"].shape == (50,) and np.isfinite(z["x"]).all()
    assert m["dmcmc"]["chains"] == 20 and m["dmcmc"]["n_skip"] == 3 and m["divergence_events"] == []
    assert m["sampler_settings"]["eta_effective"] == pytest.approx(0.05)
    assert m["sampler_settings"]["tweedie_sigma"] == pytest.approx(0.002)  # the mixture model's sigma_min
    assert not (tmp_path / "run" / "parts").exists()
    assert _sample(gmm, tmp_path / "tw", "--tweedie-sigma", "1e-3") == 0
    mt = json.loads((tmp_path / "tw" / "manifest.json").read_text())
    assert mt["sampler_settings"]["tweedie_sigma"] == pytest.approx(1e-3) and mt["dmcmc"]["tweedie_sigma"] == 1e-3


def test_eta_is_the_dlg_step_size_with_dmcmc_and_ddim_eta_is_separate(gmm, tmp_path, capsys):
    def run(out, *extra):
        return main(["sample", "--model", f"gmm:{gmm / 'mix.json'}", "--dmcmc", "--noise-classifier", str(gmm / "clf"),
                     "--integrator", "ddim", "--steps", "3", "--n-skip", "2", "--num", "10", "--chains", "10",
                     "--out", str(out), "--quiet", *extra])

    assert run(tmp_path / "a", "--eta", "0.07", "--ddim-eta", "0.5") == 0
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["sampler_settings"]["eta_effective"] == pytest.approx(0.07)
    assert m["options"] == {"eta": 0.5}
    assert run(tmp_path / "b", "--eta", "0.07", "--dlg-eta", "0.1") == 2
    assert "once" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_resume_after_interruption_gives_the_uninterrupted_result(gmm, tmp_path, monkeypatch):
    assert _sample(gmm, tmp_path / "ref") == 0
    saved = {}

    save = ChainState.save

    def crash(state, path):  # the chain state saved after round r has state.round == r + 1
        save(state, path)
        if state.round == 1:
            saved["state"] = (tmp_path / "a" / "parts" / "chains.npz").read_bytes()
        if state.round == 2:
            raise RuntimeError("simulated kill after round 1")

    monkeypatch.setattr(ChainState, "save", crash)
    with pytest.raises(RuntimeError):
        _sample(gmm, tmp_path / "a")
    with pytest.raises(RuntimeError):
        _sample(gmm, tmp_path / "b")
    # b: as if killed after writing round 1's part but before saving the state
    (tmp_path / "b" / "parts" / "chains.npz").write_bytes(saved["state"])
    assert sorted(p.name for p in (tmp_path / "b" / "parts").glob("part-*")) == ["part-00000000-00000019.npz",
                                                                                  "part-00000020-00000039.npz"]
    monkeypatch.setattr(ChainState, "save", save)
    assert _sample(gmm, tmp_path / "a") == 0
    assert _sample(gmm, tmp_path / "b") == 0
    with np.load(tmp_path / "ref" / "samples.npz") as ref:
        for run in ("a", "b"):
            with np.load(tmp_path / run / "samples.npz") as z:
                assert z["index"].tolist() == list(range(50))
                assert np.array_equal(z["x"], ref["x"]) and np.array_equal(z["chain"], ref["chain"])
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert ma["resumed_from_round"] == 2 and ma["nfe"] == json.loads((tmp_path / "ref" / "manifest.json").read_text())["nfe"]


def test_resume_refuses_other_settings(gmm, tmp_path, monkeypatch, capsys):
    save = ChainState.save

    def stop(state, path):
        save(state, path)
        if state.round == 1:
            raise RuntimeError("stop")

    monkeypatch.setattr(ChainState, "save", stop)
    with pytest.raises(RuntimeError):
        _sample(gmm, tmp_path / "c")
    monkeypatch.setattr(ChainState, "save", save)
    assert _sample(gmm, tmp_path / "c", "--dlg-eta", "0.1") == 2
    assert "other settings" in capsys.readouterr().err


def test_bad_input_exits_2_and_writes_nothing(gmm, tmp_path, capsys):
    mix = f"gmm:{gmm / 'mix.json'}"
    base = ["sample", "--model", mix, "--dmcmc", "--num", "4", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "o1")]) == 2  # no classifier for a gmm: model
    assert "noise-classifier train" in capsys.readouterr().err
    assert main(base + ["--noise-classifier", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2
    assert "not found" in capsys.readouterr().err
    other = dict(MIX, means=[[-3, 0], [3, 1], [0, 5]])
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["sample", "--model", f"gmm:{tmp_path / 'other.json'}", "--dmcmc", "--noise-classifier",
                 str(gmm / "clf"), "--num", "4", "--out", str(tmp_path / "o3"), "--quiet"]) == 2
    assert "sha256" in capsys.readouterr().err
    (tmp_path / "wide.json").write_text(json.dumps(dict(MIX, sigma_max=40.0)))
    assert main(["sample", "--model", f"gmm:{tmp_path / 'wide.json'}", "--dmcmc", "--noise-classifier",
                 str(gmm / "clf"), "--num", "4", "--out", str(tmp_path / "o4"), "--quiet"]) == 2
    assert "sigma_max" in capsys.readouterr().err
    assert main(base + ["--noise-classifier", str(gmm / "clf"), "--n-skip", "-1", "--out", str(tmp_path / "o5")]) == 2
    assert main(["sample", "--model", mix, "--n-skip", "2", "--num", "4", "--out", str(tmp_path / "o6")]) == 2
    assert "--dmcmc" in capsys.readouterr().err
    assert main(base + ["--noise-classifier", str(gmm / "clf"), "--tweedie-sigma", "0", "--out", str(tmp_path / "o7")]) == 2
    for o in ("o1", "o2", "o3", "o4", "o5", "o6", "o7"):
        assert not (tmp_path / o).exists()


def test_classifier_precision_and_compile_options(gmm, tmp_path, capsys):
    """--classifier-dtype bf16 --classifier-compile runs the same DLG (the manifest records the dtype);
    fp16 on CPU, or the flags without --dmcmc, exit 2 and write nothing."""
    assert _sample(gmm, tmp_path / "ref") == 0
    assert _sample(gmm, tmp_path / "bf16", "--classifier-dtype", "bf16", "--classifier-compile") == 0
    m = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert m["dmcmc"]["noise_classifier_dtype"] == "bf16"
    assert json.loads((tmp_path / "ref" / "manifest.json").read_text())["dmcmc"]["noise_classifier_dtype"] == "fp32"
    with np.load(tmp_path / "ref" / "samples.npz") as a, np.load(tmp_path / "bf16" / "samples.npz") as b:
        # a bf16 classifier may pick a neighbouring grid level now and then; the chains' levels stay close
        ratio = np.abs(np.log(b["sigma_star"]) - np.log(a["sigma_star"]))
        assert np.median(ratio) < 0.05 and np.isfinite(b["x"]).all()
    assert _sample(gmm, tmp_path / "fp16", "--classifier-dtype", "fp16") == 2
    assert "CUDA" in capsys.readouterr().err and not (tmp_path / "fp16").exists()
    assert main(["sample", "--model", f"gmm:{gmm / 'mix.json'}", "--classifier-compile", "--num", "4",
                 "--out", str(tmp_path / "plain")]) == 2
    assert "--dmcmc" in capsys.readouterr().err and not (tmp_path / "plain").exists()


@pytest.fixture(scope="module")
def tiny_vp(tmp_path_factory):
    """A random-weight diffusers UNet2DModel (DDPM scheduler) saved as a folder, and a few face PNGs."""
    from diffusers import DDPMScheduler, UNet2DModel
    from PIL import Image

    from ddmkit.data.faces import sample_faces

    d = tmp_path_factory.mktemp("vp")
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    unet.save_pretrained(d / "model" / "unet", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02).save_pretrained(d / "model" / "scheduler")
    (d / "images").mkdir()
    for i, im in enumerate(sample_faces(12, seed=1)[0]):
        Image.fromarray(im).save(d / "images" / f"{i}.png")
    assert main(["noise-classifier", "train", "--model", str(d / "model"), "--data", str(d / "images"), "--out",
                 str(d / "clf"), "--k", "20", "--steps", "3", "--batch-size", "8", "--quiet"]) == 0
    return d


def test_vp_unet_end_to_end_with_exact_nfe(tiny_vp, tmp_path):
    d = tiny_vp
    meta = json.loads((d / "clf.json").read_text())
    assert meta["sigma_grid"]["sigma_min"] == pytest.approx(0.0100, abs=1e-4)
    assert meta["sigma_grid"]["sigma_max"] == pytest.approx(157.4, abs=0.1)
    assert meta["architecture"]["kind"] == "cnn" and meta["architecture"]["pool_strides"] == [2, 2, 2, 2]
    out = tmp_path / "vp"
    assert main(["sample", "--model", str(d / "model"), "--dmcmc", "--noise-classifier", str(d / "clf"),
                 "--integrator", "kar1", "--steps", "3", "--n-skip", "2", "--num", "4", "--chains", "2",
                 "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["nfe"]["per_output"] == 2 + 3 + 1 and m["nfe"]["burn_in_per_chain"] == 57
    assert m["nfe"]["model_calls_batched"] == 57 + 2 * (2 + 3 + 1)
    assert m["sampler_settings"]["eta_effective"] == pytest.approx(4 * 0.8)  # [-1, 1] data: 4 eta
    with np.load(out / "samples.npz") as z:
        assert z["x"].shape == (4, 3, 32, 32) and z["x"].min() >= -1 and z["x"].max() <= 1
        assert z["chain"].tolist() == [0, 1, 0, 1]
    assert (out / "grid.png").is_file() and len(list((out / "images").glob("*.png"))) == 4


def test_vp_classifier_of_another_model_is_refused(tiny_vp, tmp_path, capsys):
    d = tiny_vp
    other = tmp_path / "other"
    shutil.copytree(d / "model", other)
    from safetensors.torch import load_file, save_file

    w = other / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(w))
    k = next(iter(state))
    state[k] = state[k] + 1
    save_file(state, str(w))
    assert main(["sample", "--model", str(other), "--dmcmc", "--noise-classifier", str(d / "clf"), "--num", "2",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "trained for model" in capsys.readouterr().err and not (tmp_path / "x").exists()


def _tune_args(gmm, out, *extra):
    return ["tune-dmcmc", "--model", f"gmm:{gmm / 'mix.json'}", "--noise-classifier", str(gmm / "clf"),
            "--target-nfe", "12", "--integrators", "kar1,pf", "--etas", "0.05", "--skip-shares", "0.3",
            "--outputs-per-chain", "10", "--num", "100", "--score-seeds", "1,2", "--out", str(out), "--quiet", *extra]


def test_tune_dmcmc_budgets_total_nfe_and_checks_the_winners_on_other_seeds(gmm, tmp_path):
    out = tmp_path / "tune.json"
    assert main(_tune_args(gmm, out)) == 0
    t = json.loads(out.read_text())
    burn = t["burn_in_per_chain"]["auto"]
    assert burn == 57  # the cifar10 burn-in (KAR2 N = 20: 37 NFE, then 10 + 10 Langevin steps), measured
    per_output = 12 - burn / 10  # 12 total, the burn-in amortised over 10 outputs per chain
    dlg_rows = [r for r in t["rows"] if r["dlg"]]
    n_skip = round(0.3 * per_output)
    assert {r["integrator"] for r in dlg_rows} == {"kar1", "pf"} and {r["n_skip"] for r in dlg_rows} == {n_skip}
    for r in dlg_rows:  # the most integrator steps that fit; measured: per output + amortised burn-in
        spec = get_integrator(r["integrator"])
        assert spec.nfe(r["steps"]) <= per_output - n_skip - 1 < spec.nfe(r["steps"] + 1)
        assert r["nfe"] == pytest.approx(r["nfe_per_output"] + burn / 10) and r["nfe"] <= 12 and r["chains"] == 10
        assert r["nfe_per_output"] == n_skip + spec.nfe(r["steps"]) + 1 and r["ess_per_output"] is not None
    plain = [r for r in t["rows"] if not r["dlg"]]
    assert all(get_integrator(r["integrator"]).nfe(r["steps"]) + 1 == r["nfe"] <= 12 for r in plain) and len(plain) == 2
    assert t["best"]["metric"] == min(r["metric"] for r in dlg_rows) and t["metric"] == "frechet_to_mixture"
    assert sorted((v["kind"], v["seed"]) for v in t["validation"]) == [("dlg", 1), ("dlg", 2), ("plain", 1), ("plain", 2)]
    v = t["verdict"]
    assert v["dlg"]["n_seeds"] == 2 and ("DLG beats" in v["text"]) == v["dlg_helps"]
    assert v["dlg"]["mean"] == pytest.approx(np.mean([x["metric"] for x in t["validation"] if x["kind"] == "dlg"]))
    before = out.read_text()
    assert main(_tune_args(gmm, out)) == 0  # resumes: every row and every score-seed run is already there
    after = json.loads(out.read_text())
    assert after["rows"] == json.loads(before)["rows"] and after["validation"] == json.loads(before)["validation"]


def test_tune_searches_burn_ins_and_the_settings_keep_the_chosen_one(gmm, tmp_path):
    out = tmp_path / "tune.json"
    small = "12:0.1:4@0.5,4@eta"  # KAR2 N = 12 (21 NFE) + 8 Langevin steps: 29 NFE, measured
    assert main(_tune_args(gmm, out, "--burn-ins", f"auto;{small}", "--integrators", "kar1")) == 0
    t = json.loads(out.read_text())
    assert t["burn_in_per_chain"] == {"auto": 57, small: 29}
    dlg = [r for r in t["rows"] if r["dlg"]]
    assert {r["burn_in"] for r in dlg} == {"auto", small}
    for r in dlg:
        assert r["nfe"] == pytest.approx(r["nfe_per_output"] + t["burn_in_per_chain"][r["burn_in"]] / 10)
    from ddmkit.dmcmc.settings_file import load_settings

    from ddmkit.dmcmc.dlg import parse_burn_in

    assert parse_burn_in(load_settings(out).config.burn_in) == parse_burn_in(t["best"]["burn_in"])


def test_tune_settings_file_round_trips_into_sample(gmm, tmp_path):
    out = tmp_path / "tune.json"
    assert main(_tune_args(gmm, out)) == 0
    t = json.loads(out.read_text())
    best = t["best"]
    assert main(["sample", "--model", f"gmm:{gmm / 'mix.json'}", "--dmcmc", "--settings", str(out), "--num", "8",
                 "--seed", "5", "--out", str(tmp_path / "by-file"), "--quiet"]) == 0
    flags = ["--integrator", best["integrator"], "--steps", str(best["steps"]), "--n-skip", str(best["n_skip"]),
             "--dlg-eta", str(best["eta"]), "--chains", "1"]  # ceil(8 / 10 outputs per chain) = 1 chain
    assert main(["sample", "--model", f"gmm:{gmm / 'mix.json'}", "--dmcmc", "--noise-classifier", str(gmm / "clf"),
                 "--num", "8", "--seed", "5", "--out", str(tmp_path / "by-flags"), "--quiet", *flags]) == 0
    with np.load(tmp_path / "by-file" / "samples.npz") as a, np.load(tmp_path / "by-flags" / "samples.npz") as b:
        assert np.array_equal(a["x"], b["x"]) and np.array_equal(a["chain"], b["chain"])
    m = json.loads((tmp_path / "by-file" / "manifest.json").read_text())
    assert m["integrator"] == best["integrator"] and m["dmcmc"]["n_skip"] == best["n_skip"]
    # the file is read back exactly: a bare settings object works too
    from ddmkit.dmcmc.settings_file import load_settings

    s = load_settings(out)
    (tmp_path / "bare.json").write_text(json.dumps(t["settings"]))
    assert load_settings(tmp_path / "bare.json") == s and s.outputs_per_chain == 10


def test_tune_and_settings_bad_input_exit_2_and_write_nothing(gmm, tmp_path, capsys):
    out = tmp_path / "tune.json"
    assert main(_tune_args(gmm, out)) == 0
    capsys.readouterr()
    other = tmp_path / "other.json"  # another mixture: the settings are refused for it
    mix = json.loads((gmm / "mix.json").read_text())
    mix["means"][0][0] += 1.0
    other.write_text(json.dumps(mix))
    cases = [
        (["sample", "--model", f"gmm:{other}", "--dmcmc", "--settings", str(out), "--noise-classifier", str(gmm / "clf"),
          "--num", "4", "--out", str(tmp_path / "o1"), "--quiet"], "holds DLG settings tuned for model"),
        (["sample", "--model", f"gmm:{gmm / 'mix.json'}", "--dmcmc", "--settings", str(out), "--steps", "5", "--num",
          "4", "--out", str(tmp_path / "o2"), "--quiet"], "--steps is set by --settings"),
        (["sample", "--model", f"gmm:{gmm / 'mix.json'}", "--settings", str(out), "--num", "4", "--out",
          str(tmp_path / "o3"), "--quiet"], "--settings applies to --dmcmc sampling only"),
        (["sample", "--model", f"gmm:{gmm / 'mix.json'}", "--dmcmc", "--settings", str(gmm / "mix.json"), "--num", "4",
          "--out", str(tmp_path / "o4"), "--quiet"], "is not a DLG settings file"),
        (_tune_args(gmm, tmp_path / "t2.json", "--target-nfe", "3"), "--target-nfe 3 is below one DLG output's total NFE"),
        (_tune_args(gmm, tmp_path / "t3.json", "--score-seeds", "0,1"), "--score-seeds must differ from the tuning --seed 0"),
        (_tune_args(gmm, tmp_path / "t4.json", "--integrators", "rk45"), "rk45's NFE is adaptive"),
        (_tune_args(gmm, tmp_path / "t5.json", "--inception-weights", str(out)), "--inception-weights is for FID"),
        (_tune_args(gmm, tmp_path / "t6.json", "--burn-ins", "auto;20:x"), "--burn-in '20:x' not understood"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json", "tune.json"]


def test_burn_in_on_a_unet_keeps_no_autograd_graph(tiny_vp):
    """The burn-in's Langevin steps run without autograd (a graph kept across them grew to 22 GB for 250 chains)."""
    from ddmkit.dmcmc.noise_classifier import load_classifier
    from ddmkit.dmcmc.dlg import BurnIn, DLGConfig, DLGSampler
    from ddmkit.models.loading import load_model

    den = load_model(str(tiny_vp / "model"))
    clf = load_classifier(tiny_vp / "clf")
    cfg = DLGConfig(integrator="kar1", steps=3, n_skip=1, burn_in=BurnIn(3, 0.5, ((2, 0.5),)))
    x, sigma, nfe = DLGSampler(den, clf, cfg, chains=2).burn_in([0, 1], [0, 0])
    assert not x.requires_grad and x.grad_fn is None and nfe == 3 + 2


def test_noise_classifier_channels_option(tiny_vp, tmp_path, capsys):
    """--channels sets the CNN widths; the file records them and loads back into the same network."""
    from ddmkit.dmcmc.noise_classifier import load_classifier

    d = tiny_vp
    out = tmp_path / "narrow"
    assert main(["noise-classifier", "train", "--model", str(d / "model"), "--data", str(d / "images"), "--out",
                 str(out), "--k", "20", "--steps", "2", "--batch-size", "8", "--channels", "4,8,8,16", "--quiet"]) == 0
    meta = json.loads((tmp_path / "narrow.json").read_text())
    assert meta["architecture"]["channels"] == [4, 8, 8, 16] and meta["training"]["channels"] == [4, 8, 8, 16]
    clf = load_classifier(out)
    convs = [m for m in clf.net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 8, 16]
    wide = load_classifier(d / "clf")
    assert sum(p.numel() for p in clf.net.parameters()) < sum(p.numel() for p in wide.net.parameters())
    for bad, msg in (("4,8,8", "four positive widths"), ("4,x,8,8", "comma-separated integers")):
        assert main(["noise-classifier", "train", "--model", str(d / "model"), "--data", str(d / "images"), "--out",
                     str(tmp_path / "bad"), "--steps", "2", "--channels", bad, "--quiet"]) != 0
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad.safetensors").exists()
