"""Training and evaluation throughput on this machine: ``python benchmarks/speed.py [options]``.

The same as ``longtail speed`` (options: ``longtail speed --help``); the implementation is
the package ``longtail/speed/``. Results go to ``benchmarks/results/speed/`` (speed.json, speed.md)
unless ``--out`` says otherwise (``longtail speed`` itself defaults to ``runs/speed``).
Run it on an otherwise idle machine: other work on the CPU lowers every number.
"""

from __future__ import annotations

import sys

from longtail.cli import main

RESULTS = "benchmarks/results/speed"

if __name__ == "__main__":
    args = sys.argv[1:]
    given = any(a == "--out" or a.startswith("--out=") for a in args)
    sys.exit(main(["speed", *args] if given else ["speed", "--out", RESULTS, *args]))
