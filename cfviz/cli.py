"""The ``cfviz`` command line. Sub-commands import their heavy dependencies only when run.

Run ``cfviz --help`` for the list of sub-commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from cfviz._version import __version__

# Each sub-command module exposes ``add_parser(subparsers)`` which registers the parser and sets
# ``func`` (called with the parsed namespace, returning an exit code).
_SUBCOMMANDS: tuple[str, ...] = (
    "cfviz.commands.demo",
    "cfviz.commands.evaluate",
    "cfviz.commands.run_notebooks",
    "cfviz.commands.train_aaclip",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfviz",
        description="Capture, store and ablate CLIP + Stable Diffusion maps for visual anomaly detection.",
    )
    parser.add_argument("--version", action="version", version=f"cfviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import importlib

    for module_name in _SUBCOMMANDS:
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from cfviz.errors import CfvizError

    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except CfvizError as exc:  # one clear sentence, no stack trace from deep inside a library
        print(f"cfviz {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cfviz {args.command}: interrupted; finished results are on disk and a rerun resumes.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
