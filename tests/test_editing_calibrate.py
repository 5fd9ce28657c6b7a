"""Per-attribute calibration of the editing distance (ddmkit.editing.calibrate) and `boundary fit --calibrate`."""
from __future__ import annotations


import numpy as np
import pytest

from ddmkit.cli import main
from ddmkit.editing.calibrate import apply_calibration, calibrate_distance, choose_multiple
from ddmkit.editing.files import load_boundary, save_boundary
from ddmkit.editing.fitting import fit_boundaries, invert_batched
from ddmkit.editing.plan import Distance, EditPlan
from ddmkit.editing.settings import MixingStep
from ddmkit.editing.labelled import labelled_faces
from ddmkit.errors import DdmkitError

from test_editing_boundaries import tiny_denoiser


@pytest.fixture(scope="module")
def setup():
    den = tiny_denoiser(0)
    x, y, info = labelled_faces(12, "smiling", resolution=16)
    z, h = invert_batched(den, x, MixingStep(60, 5))
    b = fit_boundaries(den, x, y, attribute="smiling", step=MixingStep(60, 5), data=info, inversions=(z, h))
    return den, b, z, h, y


def test_choose_multiple_is_the_smallest_reaching_the_target():
    assert choose_multiple([2, 0.5, 1], [1.0, 0.7, 0.96], 0.95) == (1.0, True)
    assert choose_multiple([0.5, 1, 2], [0.95, 0.97, 1.0], 0.95) == (0.5, True)  # >= target counts
    # none reaches it: the smallest multiple with the best success, flagged
    assert choose_multiple([0.5, 1, 2], [0.3, 0.8, 0.8], 0.95) == (1.0, False)
    with pytest.raises(DdmkitError, match="at least one multiple"):
        choose_multiple([], [], 0.9)


def test_success_curve_counts_flips_by_the_judge(setup):
    den, b, z, h, y = setup
    n = len(y)
    always = lambda images: np.ones(len(images))  # noqa: E731  "attribute present" for every image
    # every source absent -> every edit (towards present) is called flipped: success 1 at all multiples
    res = calibrate_distance(den, b, z, h, np.zeros(n, int), always, multiples=(1.0, 0.5), n_steps=3)
    assert res["multiples"] == [0.5, 1.0] and res["success"] == [1.0, 1.0]
    assert res["chosen_multiple"] == 0.5 and res["reached"] and res["n"] == n
    # every source present -> edits towards absent never flip by this judge: success 0, not reached
    res = calibrate_distance(den, b, z, h, np.ones(n, int), always, multiples=(0.5, 1.0), n_steps=3)
    assert res["success"] == [0.0, 0.0] and not res["reached"] and res["chosen_multiple"] == 0.5
    # mixed sources: success is the share of the absent ones
    labels = np.arange(n) % 3 == 0
    res = calibrate_distance(den, b, z, h, labels.astype(int), always, multiples=(1.0,), n_steps=3)
    assert res["success"] == [pytest.approx(float((~labels).mean()))]


def test_calibration_input_errors(setup):
    den, b, z, h, y = setup
    judge = lambda images: np.ones(len(images))  # noqa: E731
    with pytest.raises(DdmkitError, match="one label per latent"):
        calibrate_distance(den, b, z, h, y[:-1], judge)
    with pytest.raises(DdmkitError, match="multiples must be > 0"):
        calibrate_distance(den, b, z, h, y, judge, multiples=(0.0, 1.0))
    with pytest.raises(DdmkitError, match="target must be in"):
        calibrate_distance(den, b, z, h, y, judge, target=1.5)


def test_apply_calibration_scales_every_space_and_round_trips(setup, tmp_path):
    den, b, z, h, y = setup
    res = {"multiples": [0.5, 1.0], "success": [1.0, 1.0], "target": 0.95, "chosen_multiple": 0.5, "reached": True}
    cal = apply_calibration(b, res, judge_name="test judge")
    for s in ("z", "h"):
        assert cal[s].recommended_distance == pytest.approx(0.5 * b[s].recommended_distance)
        assert b[s].recommended_distance > 0  # the original is untouched
    assert cal.meta["distance_calibration"]["uncalibrated_recommended_distance"]["z"] == pytest.approx(b["z"].recommended_distance)
    path = save_boundary(tmp_path / "smiling.safetensors", cal)
    back = load_boundary(path, den)
    assert back["h"].recommended_distance == pytest.approx(cal["h"].recommended_distance)
    assert back.meta["distance_calibration"]["chosen_multiple"] == 0.5
    # a relative distance of 1 now means the calibrated distance: the projection lands there
    plan = EditPlan([(back, Distance(1.0, relative=True))])
    z2, h2, used = plan.apply(z, h)
    assert used["smiling"]["z"] == pytest.approx(cal["z"].recommended_distance)
    assert np.allclose(back["z"].project(z2), cal["z"].recommended_distance, atol=1e-3)


def test_fit_calibrate_needs_faces_and_writes_nothing_on_error(tmp_path, capsys):
    pos, neg = tmp_path / "pos", tmp_path / "neg"
    from PIL import Image

    for d, v in ((pos, 200), (neg, 30)):
        d.mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), v + i, np.uint8)).save(d / f"{i}.png")
    out = tmp_path / "b.safetensors"
    code = main(["boundary", "fit", "--model", "digits", "--positive", str(pos), "--negative", str(neg),
                 "--calibrate", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "--calibrate needs --faces N" in err and len(err.strip().splitlines()) == 1
    code = main(["boundary", "fit", "--model", "default", "--faces", "8", "--attribute", "smiling", "--calibrate",
                 "--calibrate-multiples", "0,1", "--out", str(out)])
    assert code != 0 and "--calibrate-multiples must be positive" in capsys.readouterr().err
    code = main(["boundary", "fit", "--model", "default", "--faces", "8", "--attribute", "smiling", "--calibrate",
                 "--test", "0", "--out", str(out)])
    assert code != 0 and "give --test > 0" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_reused_inversions_are_not_recorded_as_free(setup):
    """Latents passed in were inverted elsewhere: their time is the caller's to give (null otherwise, not 0)."""
    den, b, z, h, y = setup
    x, _, info = labelled_faces(12, "smiling", resolution=16)
    assert b.meta["invert_seconds"] is None
    timed = fit_boundaries(den, x, y, attribute="smiling", step=MixingStep(60, 5), data=info, inversions=(z, h), invert_seconds=1.25)
    assert timed.meta["invert_seconds"] == 1.25
    fresh = fit_boundaries(den, x, y, attribute="smiling", step=MixingStep(60, 5), data=info)
    assert fresh.meta["invert_seconds"] > 0
