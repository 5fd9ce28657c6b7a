"""Run `ddmkit` in a subprocess with faults injected by monkeypatching (tests only; nothing in ddmkit).

    python tests/cli_runner.py [--sleep-per-part S] [--exit-after-parts K] [--rank R] -- sample ...

--sleep-per-part S: sleep S seconds after each part file is written (keeps a run busy, for the
                    concurrency tests).
--exit-after-parts K: die with os._exit(17) (no cleanup, as from kill -9) right after this worker's
                      K-th part file (plain batches and DLG rounds both write parts).
--wait-for FILE: after each part file, wait (up to 300 s) until FILE exists (holds a run open while a
                test starts another one).
--rank R: apply the faults only in the torchrun worker of rank R (default: every worker).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sleep-per-part", type=float, default=0.0)
    p.add_argument("--exit-after-parts", type=int, default=0)
    p.add_argument("--wait-for", default=None)
    p.add_argument("--rank", type=int, default=None)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    opts, rest = p.parse_args(argv[:cut]), argv[cut + 1:]

    from ddmkit import outputs
    from ddmkit.cli import main as ddmkit_main

    mine = opts.rank is None or int(os.environ.get("RANK", "0")) == opts.rank
    if mine and (opts.sleep_per_part or opts.exit_after_parts or opts.wait_for):
        real_write, written = outputs.PartStore.write, [0]

        def write(self, *a, **k):
            real_write(self, *a, **k)
            written[0] += 1
            if opts.exit_after_parts and written[0] >= opts.exit_after_parts:
                sys.stderr.write(f"cli_runner: exiting after {written[0]} parts\n")
                sys.stderr.flush()
                os._exit(17)
            time.sleep(opts.sleep_per_part)
            t0 = time.time()
            while opts.wait_for and not os.path.exists(opts.wait_for) and time.time() - t0 < 300:
                time.sleep(0.05)

        outputs.PartStore.write = write
    return ddmkit_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
