"""``cfviz run-notebooks``: execute the numbered notebooks (smoke mode by default), writing figures.

``make figures`` runs ``cfviz run-notebooks --out figures``. Parameters are injected below each
notebook's ``parameters`` cell; the committed notebooks are never written to (executed copies go
to ``--executed`` when asked).
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def _literal(text: str) -> tuple[str, Any]:
    import ast

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"-p expects NAME=VALUE (e.g. -p categories='[\"brick\"]'), got {text!r}")
    name, value = text.split("=", 1)
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value  # a bare word is a string
    return name.strip(), parsed


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cfviz.errors import ConfigError
    from cfviz.notebooks import find_notebooks, project_root, run_notebooks

    root = project_root()
    folder = Path(args.notebooks).expanduser() if args.notebooks else root / "notebooks"
    how = ("--notebooks" if args.notebooks else
           f"the notebooks/ folder of the cfviz checkout, searched upward from {Path.cwd()}")
    if not folder.is_dir():
        raise ConfigError(f"no notebook folder at {folder} ({how}); run from a cfviz source checkout or pass "
                          "--notebooks DIR")
    available = find_notebooks(folder)
    if not available:
        raise ConfigError(f"{folder} ({how}) holds no numbered notebooks (NN_name.ipynb); run from a cfviz "
                          "source checkout or pass --notebooks DIR")
    for name in args.names:
        if not any(p.stem == name or p.stem.startswith(name) or p.name == name for p in available):
            raise ConfigError(f"no notebook in {folder} matches {name!r}; available: "
                              f"{', '.join(p.stem for p in available)}")
    smoke = args.smoke if args.smoke is not None else os.environ.get("CFVIZ_SMOKE", "1") != "0"
    params: dict[str, Any] = {"smoke": smoke, "figures_dir": str(Path(args.out).resolve())}
    if args.run_dir:
        params["run_dir"] = str(Path(args.run_dir).resolve())
    params.update(dict(args.param or []))
    times = run_notebooks(folder, args.names, parameters=params, executed_dir=args.executed, timeout=args.timeout)
    total = sum(times.values())
    print(f"ran {len(times)} notebooks in {total:.0f} s; figures in {params['figures_dir']}")
    return 0


EXAMPLES = """\
examples:
  cfviz run-notebooks                          # every notebook in smoke mode, figures in figures/
  cfviz run-notebooks 02 06 --out /tmp/figs    # two notebooks, by number prefix
  cfviz run-notebooks --no-smoke -p dataset=mvtec -p data_root=/data/mvtec_ad 03
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``run-notebooks`` options."""
    p.add_argument("names", nargs="*", help="notebooks to run, by stem or number prefix (default: all)")
    p.add_argument("--out", default="figures", help="figure folder")
    p.add_argument("--smoke", dest="smoke", action="store_true", default=None,
                   help="force smoke mode (default: on, unless CFVIZ_SMOKE=0)")
    p.add_argument("--no-smoke", dest="smoke", action="store_false", help="use real weights and data (see -p)")
    p.add_argument("-p", "--param", action="append", type=_literal, metavar="NAME=VALUE",
                   help="override a parameter, e.g. -p dataset=mvtec -p data_root=/data/mvtec (repeatable)")
    p.add_argument("--run-dir", help="capture store and tables folder (default: the notebooks' runs/notebooks)")
    p.add_argument("--notebooks", help="folder of the notebooks (default: notebooks/ of the project)")
    p.add_argument("--executed", help="also write the executed notebooks (with outputs) to this folder")
    p.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")


def add_parser(sub: Any) -> None:
    from cfviz.commands.evaluate import _defer

    p = sub.add_parser("run-notebooks", help="execute the notebooks (smoke mode by default) and write their figures",
                       description="Execute the numbered notebooks top to bottom with nbclient. Smoke mode (tiny "
                                   "offline models, small generated texture set) is the default; --no-smoke or "
                                   "CFVIZ_SMOKE=0 runs them with their own parameters (real weights and data, "
                                   "set with -p).", epilog=EXAMPLES)
    _defer(p, add_arguments)
    p.set_defaults(func=run)
