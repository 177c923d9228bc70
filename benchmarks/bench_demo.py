"""How long ``cfviz demo`` takes: the figure ``cfviz demo --help`` quotes.

Runs ``python -m cfviz demo`` twice in fresh temporary folders, as ``make demo`` does after the
install: a **first run** (the texture data set is generated, the tiny offline models run on every
image, then scoring and figures) and a **rerun** on the same folders (the store holds every image:
no model runs). Each run is timed in wall seconds and in the CPU seconds of the child process
(user + system, all its threads): on a machine shared with other work the wall time grows with
the load, the CPU time much less, so both are recorded with the load average.

Run:  .venv/bin/python benchmarks/bench_demo.py [--label TEXT]
Writes benchmarks/results/demo.md (the new run first, earlier runs kept below it).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, load_average, machine, now, write_results  # noqa: E402

TITLE = "# `cfviz demo`: wall and CPU seconds, first run and rerun"
HISTORY = "## Earlier runs"


def run_demo(folder: Path) -> tuple[float, float, str]:
    """(wall s, child CPU s, load before/after) of one ``cfviz demo`` into ``folder``."""
    cmd = [sys.executable, "-m", "cfviz", "demo", "--out", str(folder / "run"), "--figures", str(folder / "fig"),
           "--root", str(folder / "textures"), "--no-progress"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = load_average()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "MPLBACKEND": "Agg"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, f"{load} / {load_average()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--label", default="", help="what this run measures (a heading)")
    args = p.parse_args()
    code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip() or "unknown"
    with tempfile.TemporaryDirectory() as tmp:
        first = run_demo(Path(tmp))
        rerun = run_demo(Path(tmp))
    rows = "\n".join(f"| {name} | {w:.1f} | {c:.1f} | {load} |"
                     for name, (w, c, load) in (("first run (data generated, models run on 57 images)", first),
                                                ("rerun (store complete: no model runs)", rerun)))
    section = (f"## {now()}: {args.label or 'cfviz demo'}\n\n"
               "Command: `.venv/bin/python benchmarks/bench_demo.py`  \n"
               f"Code: {code}  \nMachine: {machine()}\n\n"
               "| run | wall s | CPU s (user + system, all threads) | 1-min load before / after |\n"
               "|---|---:|---:|---|\n" + rows + "\n")
    old = (RESULTS / "demo.md").read_text() if (RESULTS / "demo.md").exists() else ""
    # earlier sections (below the title), one heading level down, under HISTORY
    earlier = "\n".join("#" + line if line.startswith("## ") else line
                         for line in old.split("\n", 1)[-1].splitlines() if line != HISTORY).strip()
    text = f"{TITLE}\n\n{section}" + (f"\n{HISTORY}\n\n{earlier}\n" if earlier else "")
    print(section)
    write_results("demo.md", text)


if __name__ == "__main__":
    main()
