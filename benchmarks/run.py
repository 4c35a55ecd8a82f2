"""Regenerate the README's performance numbers: ``PYTHONPATH=src python benchmarks/run.py``.

Runs ``convnd bench`` (the same code as the CLI) with every strategy column, the N <= 3
overhead workloads and the peak-memory measurement, writing the tables to
``benchmarks/results.txt`` and the chart to ``benchmarks/results.png``. Extra arguments
are passed on (e.g. ``--rounds 9`` or ``--only 4d 5d``).
"""

from __future__ import annotations

import contextlib
import pathlib
import sys

from convnd.cli import main

HERE = pathlib.Path(__file__).resolve().parent

if __name__ == "__main__":
    argv = ["bench", "--strategies", "--overhead", "--memory", "--plot", str(HERE / "results.png"), *sys.argv[1:]]
    with open(HERE / "results.txt", "w") as out, contextlib.redirect_stdout(out):
        code = main(argv)
    print((HERE / "results.txt").read_text())
    sys.exit(code)
