"""The bad-input campaign (tests/bad_inputs.py): every case exits 2 with one line that names the
problem, and leaves every file of its folder unchanged, byte for byte."""
from __future__ import annotations

import pytest

from bad_inputs import CASES, fill, make_world, snapshot
from ddmkit.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(case, world, tmp_path, capsys):
    if case.setup is not None:
        case.setup(tmp_path, world)
    capsys.readouterr()
    before = snapshot(tmp_path)
    code = main(fill(case.argv, tmp_path, world))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ddmkit "), err
    assert case.message in lines[0], lines[0]
    assert snapshot(tmp_path) == before


def test_the_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
