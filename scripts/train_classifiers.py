#!/usr/bin/env python
"""Reproduce the shipped attribute classifiers (ddmkit/models/weights/{faces,digits}_classifier.*).

    .venv/bin/python scripts/train_classifiers.py            # both (about 5-10 minutes on 2 CPU cores)
    .venv/bin/python scripts/train_classifiers.py --domain digits --threads 2

Faces: fresh procedural faces every batch (seeds 10,000,000 + step), evaluated on 10,000 faces of seed
20,000,000. Digits: fixed 80/20 split of scikit-learn's digits (numpy default_rng(0) permutation).
"""
from __future__ import annotations

import argparse
import torch

from ddmkit.metrics.classifiers import save_classifier, train_digits_classifier, train_faces_classifier


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", choices=("faces", "digits", "both"), default="both")
    p.add_argument("--faces-steps", type=int, default=1500)
    p.add_argument("--digits-epochs", type=int, default=60)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None, help="weights folder (default: the package's models/weights)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # the command that reproduces the weights (--out and --threads do not change what is learned)
    command = (f"python scripts/train_classifiers.py --domain {args.domain} --faces-steps {args.faces_steps} "
               f"--digits-epochs {args.digits_epochs}")
    if args.domain in ("faces", "both"):
        r = train_faces_classifier(steps=args.faces_steps)
        print("wrote", save_classifier(r, "faces", command, args.out))
    if args.domain in ("digits", "both"):
        r = train_digits_classifier(epochs=args.digits_epochs)
        print("wrote", save_classifier(r, "digits", command, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
