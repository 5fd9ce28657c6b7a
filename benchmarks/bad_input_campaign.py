"""The bad-input campaign, run and recorded: every case of tests/bad_inputs.py (and the crafted-pickle
cases of tests/test_crafted_pickle.py) with its exit code, its message and whether the files under
its folder stayed byte-for-byte the same. The next campaign starts from this list.

    python benchmarks/bad_input_campaign.py        # -> benchmarks/results/bad_input_campaign.json (~1 min)
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "bad_input_campaign.json"


def load(name: str):
    """A module of tests/ by path (the case tables live beside the tests that assert them)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_case(argv: list[str], setup, tmp: Path, world: dict, marker: Path | None = None) -> dict:
    from ddmkit.cli import main

    bad = sys.modules["bad_inputs"]
    if setup is not None:
        setup(tmp, world)
    before = bad.snapshot(tmp)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(bad.fill(argv, tmp, world))
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    row = {"exit_code": code, "message": lines[-1] if lines else "", "lines": len(lines),
           "files_unchanged": bad.snapshot(tmp) == before}
    if marker is not None:
        row["pickle_ran"] = marker.exists()
    return row


def main() -> int:
    bad = load("bad_inputs")
    crafted = load("test_crafted_pickle")
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        world = bad.make_world(Path(d) / "world")
        for i, case in enumerate(bad.CASES):
            tmp = Path(d) / f"case{i}"
            tmp.mkdir()
            rows.append({"case": case.name, "kind": "bad input", "argv": case.argv, "expected": case.message,
                         **run_case(case.argv, case.setup, tmp, world)})
        for i, (name, argv, setup) in enumerate(crafted.CASES):
            tmp = Path(d) / f"pickle{i}"
            tmp.mkdir()
            argv = argv or bad.DLG + ["--out", "{tmp}/run", "--quiet"]
            row = run_case(argv, setup, tmp, world, marker=tmp / "MARKER")
            rows.append({"case": name, "kind": "crafted pickle", "argv": argv, **row})
    ok = [r for r in rows if (r["exit_code"] == 2 or r["case"] == "evaluate-samples-extra-array")
          and not r.get("pickle_ran") and (r["kind"] != "bad input" or (r["files_unchanged"] and r["lines"] == 1
                                                                          and r["expected"] in r["message"]))]
    result = {"command": "python benchmarks/bad_input_campaign.py", "cases": len(rows), "as_required": len(ok),
              "seconds": round(time.time() - t0, 1),
              "rule": "bad input: exit 2, one line naming the problem and the fix, every file unchanged; crafted "
                      "pickle: never unpickled (marker absent), exit 2 (a pickled array that is never read: exit 0)",
              "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(ok)} of {len(rows)} cases as required -> {OUT}")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
