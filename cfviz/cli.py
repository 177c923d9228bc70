"""The ``cfviz`` command line. Sub-commands import their heavy dependencies only when run.

Run ``cfviz --help`` for the list of sub-commands. Building the parser imports no torch, numpy
or open_clip: each sub-command's arguments are added the first time that sub-command is parsed
or its help is shown, so ``cfviz --help`` and ``cfviz --version`` answer at once.

Every error a user can cause ends in one line, ``cfviz COMMAND: error: SENTENCE``, naming the
flag or file and the fix, with exit code 1 (2 for what argparse itself rejects). Warnings are one
line each, ``cfviz COMMAND: warning: SENTENCE``; both name settings by their flags (:func:`cli_message`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cfviz._version import __version__

# Each sub-command module exposes ``add_parser(subparsers)`` which registers the parser and sets
# ``func`` (called with the parsed namespace, returning an exit code) and ``cli_flags`` (setting
# path -> flag, used to phrase configuration errors in CLI terms).
_SUBCOMMANDS: tuple[str, ...] = (
    "cfviz.commands.demo",
    "cfviz.commands.evaluate",
    "cfviz.commands.run_notebooks",
    "cfviz.commands.train_aaclip",
)

#: Library parameters whose name differs from the last part of the setting they set, as
#: ``{parameter: setting path}``. With the sub-command's flags (setting path -> flag) this is the one
#: table by which every error is written in CLI words (:func:`cli_names`); a setting's own name
#: (``missing_masks``, ``clip_pretrained``) needs no entry.
PARAMETER_SETTINGS: dict[str, str] = {
    "pretrained": "models.clip_pretrained",  # load_clip(name, pretrained=...)
    "name": "models.clip_arch",              # load_clip(name=...)
    "model": "models.diffusion",             # load_inpainting(model=...)
    "min_resolution": "scoring.language_min_resolution",
}


def cli_names(flags: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every Python spelling of a setting (its path, its last part, a library parameter) -> its flag.

    ``flags`` (setting path -> flag) defaults to ``cfviz evaluate``'s, which has every setting.

    >>> names = cli_names()
    >>> names["models.clip_pretrained"], names["clip_pretrained"], names["pretrained"], names["missing_masks"]
    ('--clip-pretrained', '--clip-pretrained', '--clip-pretrained', '--missing-masks')
    """
    if not flags:
        from cfviz.commands.evaluate import FLAGS

        flags = FLAGS
    names = {path.rsplit(".", 1)[-1]: flag for path, flag in flags.items()}
    names.update({param: flags[path] for param, path in PARAMETER_SETTINGS.items() if path in flags})
    names.update(flags)
    return names


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default (unless it is None/False, the help already says it, or the flag takes
    no value: ``--no-smoke``'s internal ``True`` is not a default a user chooses).

    Descriptions are wrapped; text with line breaks (the examples epilog) is kept as written.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default is argparse.SUPPRESS \
                or not action.option_strings or action.nargs == 0:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class CommandParser(argparse.ArgumentParser):
    """A sub-command parser whose arguments are added on first use (keeps ``cfviz --help`` instant).

    >>> p = CommandParser(prog="x")
    >>> p.defer(lambda q: q.add_argument("--n", type=int, default=1, help="n"))
    >>> p.parse_args([]).n
    1
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._builders: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, build: Callable[[argparse.ArgumentParser], None]) -> None:
        """Call ``build(self)`` before this parser is first used."""
        self._builders.append(build)

    def _build(self) -> None:
        while self._builders:
            self._builders.pop(0)(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._build()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._build()
        return super().format_help()

    def format_usage(self) -> str:
        self._build()
        return super().format_usage()


def build_parser() -> argparse.ArgumentParser:
    """The ``cfviz`` parser (cheap: sub-command arguments are added when first needed)."""
    parser = argparse.ArgumentParser(
        prog="cfviz", formatter_class=HelpFormatter,
        description="Capture, store and ablate CLIP + Stable Diffusion maps for visual anomaly detection.",
        epilog="examples:\n"
               "  cfviz demo                                   # offline tiny models, writes figures/\n"
               "  cfviz evaluate --method clipfusion winclip --shots 0 1 --out runs/textures\n"
               "  cfviz evaluate --help                        # every option of a command")
    parser.add_argument("--version", action="version", version=f"cfviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for module_name in _SUBCOMMANDS:
        importlib.import_module(module_name).add_parser(sub)
    return parser


def cli_message(exc: BaseException, flags: Mapping[str, str] | None = None) -> str:
    """An error as one line in CLI terms: every Python spelling of a setting written as its flag.

    A configuration error's marked settings are phrased by ``flags``; in any message,
    ``name=value`` (and ``name=...``) of a setting becomes ``--flag value``, and a setting's path
    or (multi-word) parameter name its flag (:func:`cli_names`).

    >>> from cfviz.errors import DatasetError
    >>> cli_message(DatasetError("pass missing_masks='warn' to go on, or set mask_suffix= for other names"))
    'pass --missing-masks warn to go on, or set --mask-suffix for other names'
    """
    import re

    from cfviz.errors import ConfigError

    names = cli_names(flags)
    text = exc.phrase(names) if isinstance(exc, ConfigError) else str(exc)

    def keyword(m: re.Match[str]) -> str:
        flag, value = names.get(m["name"]), (m["value"] or "").strip("'\"")
        if flag is None:
            return m[0]
        return flag if value in ("", "...", "[...]", "True") else f"{flag} {value}"  # True: a switch

    text = re.sub(r"(?<![\w.-])(?P<name>[A-Za-z_][\w.]*)=(?P<value>\.\.\.|\[\.\.\.\]|'[^']*'|\"[^\"]*\"|[^\s,;)]+)?",
                  keyword, text)
    spelled = sorted((n for n in names if "_" in n or "." in n), key=len, reverse=True)
    if spelled:  # bare multi-word names and setting paths ("lower min_resolution")
        pattern = r"(?<![\w./-])(" + "|".join(map(re.escape, spelled)) + r")(?![\w/-]|\.\w)"
        text = re.sub(pattern, lambda m: names[m[1]], text)
    return " ".join(text.split())


def _warning_printer(command: str, flags: Mapping[str, str]) -> Callable[..., None]:
    """A :func:`warnings.showwarning` that prints ``cfviz COMMAND: warning: SENTENCE`` in CLI words."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        text = cli_message(message if isinstance(message, Warning) else category(message), flags)
        print(f"cfviz {command}: warning: {text}", file=file or sys.stderr)

    return show


def _os_message(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    if exc.filename is not None:
        return f"{exc.filename}: {reason.lower()}; check the path and its permissions"
    return " ".join(str(exc).split()) or reason


def main(argv: Sequence[str] | None = None) -> int:
    from cfviz.errors import CfvizError

    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    flags: Mapping[str, str] = getattr(args, "cli_flags", {}) or {}
    try:
        with warnings.catch_warnings():  # warnings, too, in CLI words, one line each
            warnings.showwarning = _warning_printer(args.command, flags)
            return int(func(args) or 0)
    except CfvizError as exc:  # one clear sentence, no stack trace from deep inside a library
        print(f"cfviz {args.command}: error: {cli_message(exc, flags)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a user path that cannot be read or written (permissions, disk full, ...)
        print(f"cfviz {args.command}: error: {_os_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cfviz {args.command}: interrupted; finished results are on disk and a rerun resumes.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
