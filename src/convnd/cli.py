"""The ``convnd`` command line: ``convnd VERB ...`` and ``python -m convnd VERB ...``.

Each verb lives in its own module exposing ``add_arguments(parser)`` and
``run_cli(args) -> int``; the parser imports each to add its arguments, and the
heavy optional imports (matplotlib, pillow, torchnd, JAX) happen only inside the
verb that needs them, so ``convnd demo`` without the viz extra still runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .errors import ConvndError

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("convnd.demo", "show what convnd does, in a few runnable lines"),
    "explain": ("convnd.explanation", "what a convolution layer does to a tensor shape, per dim"),
    "animate": ("convnd.animation", "draw the kernel sliding over the input, as a GIF or PNG"),
    "bench": ("convnd.bench", "measure convnd against its peers and the machine's GEMM"),
}


def build_parser(verbs: dict[str, tuple[str, str]] = VERBS) -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per available verb."""
    parser = argparse.ArgumentParser(prog="convnd", description="One convolution for any number of spatial dims.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_) in verbs.items():
        try:
            add_arguments = importlib.import_module(module).add_arguments
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
            continue  # a verb whose module is not part of this build
        add_arguments(sub.add_parser(verb, help=help_, description=help_))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a user error, printed as one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        return importlib.import_module(VERBS[args.verb][0]).run_cli(args)
    except ConvndError as error:
        print(f"convnd {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`convnd explain ... | head`): stop quietly as Unix tools do, and keep
        # Python from raising again while flushing stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
