"""Training and evaluation throughput on this machine: ``python benchmarks/speed.py [options]``.

The same as ``longtail speed`` (options: ``longtail speed --help``); the implementation is
``longtail/speed.py``. Results go to ``benchmarks/results/speed/`` (speed.json, speed.md).
Run it on an otherwise idle machine: other work on the CPU lowers every number.
"""

from __future__ import annotations

import sys

from longtail.cli import main

if __name__ == "__main__":
    sys.exit(main(["speed", *sys.argv[1:]]))
