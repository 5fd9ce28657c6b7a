"""`ddmkit demo --quick`: the README's first command, end to end on the shipped models (about a minute)."""
from __future__ import annotations

import re

from ddmkit.cli import main


def test_demo_quick_writes_every_section_with_its_images_and_numbers(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    sections = re.findall(r"<h2>(\d)\. ", page)
    assert sections == ["1", "2", "3", "4"]  # mixture, faces model, Denoising MCMC, editing
    assert "Not available" not in page
    images = re.findall(r"src='([^']+)'", page)
    assert len(images) >= 10 and all((out / name).is_file() and (out / name).stat().st_size > 500 for name in images)
    # the DLG table: plain and DLG at the same NFE, both with a finite FD-faces
    rows = re.findall(r"<tr><td>~10 NFE</td><td>(plain|DLG)</td><td>(\d+)</td><td>([\d.]+)</td></tr>", page)
    assert [r[0] for r in rows] == ["plain", "DLG"] and rows[0][1] == rows[1][1]
    assert all(0 < float(r[2]) < 1e4 for r in rows)
    # one editing strip per shipped boundary
    assert {p.name for p in out.glob("edit_*.png")} >= {"edit_smiling.png", "edit_eyeglasses.png", "edit_dark_hair.png"}
