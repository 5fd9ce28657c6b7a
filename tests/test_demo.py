"""`ddmkit demo --quick`: the README's first command end to end on the shipped models, at the smallest size
(the default and --full sizes run the same code with more samples and settings)."""
from __future__ import annotations

import html
import re

from PIL import Image

from ddmkit.cli import main
from ddmkit.demo import GMM_SETTINGS, QUICK, total_steps
from ddmkit.editing import shipped_boundaries
from ddmkit.integrators import INTEGRATORS
from ddmkit.metrics.evaluate import noise_floor


def table_rows(fragment: str) -> list[list[str]]:
    return [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", r)] for r in re.findall(r"<tr>(.*?)</tr>", fragment)
            if "<td>" in r]


def test_demo_quick_writes_every_section_with_its_images_and_numbers(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    total = total_steps(QUICK)
    # one progress bar over the whole demo, run to its end: every step counted once
    assert re.search(rf" {total}/{total} \[", err) and not re.search(rf" {total + 1}/{total} \[", err)
    page = (out / "index.html").read_text()
    assert re.findall(r"<h2>(\d)\. ", page) == ["1", "2", "3", "4"]  # mixture, faces, Denoising MCMC, editing
    assert "Not available" not in page and "grid-template-columns:1fr 1fr" in page
    images = re.findall(r"src='([^']+)'", page)
    assert len(images) >= 10 and all((out / name).is_file() and (out / name).stat().st_size > 500 for name in images)
    sections = {int(m[0]): m[1] for m in re.findall(r"<section><h2>(\d)\. (.*?)</section>", page)}
    gmm, faces, dlg, edit = sections[1], sections[2], sections[3], sections[4]

    # the mixture: every integrator, n samples each
    assert [r[0] for r in table_rows(gmm)] == [name for name, _ in GMM_SETTINGS] and {
        name for name, _ in GMM_SETTINGS} == set(INTEGRATORS)
    assert all(int(r[2]) == QUICK.gmm_n for r in table_rows(gmm))

    # faces: n and the noise floor at that n in every row, the floor the metrics module gives at that n
    floor = noise_floor("faces", QUICK.faces_n)
    for row in table_rows(faces):
        assert int(row[2]) == QUICK.faces_n and row[5] == f"{floor['mean']:.4g} +- {floor['std']:.2g}"

    # DLG: plain and DLG side by side (left, right) at the same NFE per output, burn-in counted for DLG only
    rows = table_rows(dlg)
    assert [r[:3] for r in rows] == [["~10 NFE", "plain", str(QUICK.dlg_n)], ["~10 NFE", "DLG", str(QUICK.dlg_n)]]
    assert rows[0][3] == rows[1][3] and float(rows[0][4]) == 0 and float(rows[1][4]) > 0
    assert all(0 < float(r[7]) < 1e4 for r in rows)
    assert re.findall(r"src='([^']+)'", dlg) == ["dlg_plain_6.png", "dlg_dlg_5_2.png", "dlg_fd_vs_nfe.png"]
    assert "Same seeds" in dlg
    # the plain samples beside DLG are the faces section's kar1 N=6 samples: same seeds, sampled once
    assert (out / "dlg_plain_6.png").read_bytes() == (out / "faces_kar1_6.png").read_bytes()

    # editing: one strip per shipped boundary, each row one face: source | reconstruction | edit
    shipped = set(shipped_boundaries())
    assert {r[0] for r in table_rows(edit)} == shipped and {p.name for p in out.glob("edit_*.png")} == {
        f"edit_{a}.png" for a in shipped}
    w, h = Image.open(out / "edit_smiling.png").size
    assert (w, h) == (3 * (3 * 33 + 1), 3 * (QUICK.edit_k * 33 + 1))  # 32 px tiles, 1 px gaps, scale 3


def test_demo_sizes_exclude_each_other(tmp_path, capsys):
    assert main(["demo", "--quick", "--full", "--out", str(tmp_path / "x")]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
