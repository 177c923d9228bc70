"""How fast each bad input of issues 10 and 19 fails on the command line, and with what sentence.

Each case runs ``cfviz evaluate ... --no-progress`` as a fresh process (as a user would), in an
empty temporary folder, and records the exit code, the last line of stderr and the wall time
from start to exit (Python start-up and imports included). Also times ``cfviz --help`` and
``cfviz --version``. Writes ``results/fail_fast.md``.

    .venv/bin/python benchmarks/bench_fail_fast.py
    # with a before/after column: each case also runs on another commit's source tree
    git archive cbe98a2 | tar -x -C /tmp/cfviz-base
    .venv/bin/python benchmarks/bench_fail_fast.py --baseline /tmp/cfviz-base
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine, now, write_results  # noqa: E402

CFVIZ = Path(sys.executable).with_name("cfviz")


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(case, arguments of ``cfviz evaluate``) for every bad input listed in issue 10 (and a few more)."""
    junk = tmp / "junk.safetensors"
    junk.write_bytes(os.urandom(4096))
    a_file = tmp / "a_file"
    a_file.write_text("x")
    (tmp / "sd-folder").mkdir(exist_ok=True)
    return [
        ("--shots -1", ["--shots", "-1"]),
        ("--alpha-seg 2", ["--alpha-seg", "2"]),
        ("--alpha-cls -0.5", ["--alpha-cls", "-0.5"]),
        ("--sigma -3", ["--sigma", "-3"]),
        ("--batch-size 0", ["--batch-size", "0"]),
        ("--seeds -1", ["--seeds", "-1"]),
        ("--eval-size 0", ["--eval-size", "0"]),
        ("--device cuda (no CUDA)", ["--device", "cuda"]),
        ('--state ""', ["--state", ""]),
        ("--diffusion-size 64", ["--diffusion-size", "64"]),
        ("--diffusion-size 100", ["--diffusion-size", "100"]),
        ("--timesteps 1000", ["--timesteps", "1000"]),
        ("random-bytes .safetensors as --clip-pretrained",
         ["--clip", "pretrained", "--clip-pretrained", str(junk)]),
        ("unknown pretrained tag", ["--clip", "pretrained", "--clip-pretrained", "laion400m_e3"]),
        ("--clip pretrained, weights not cached (offline)", ["--clip", "pretrained"]),
        ("--clip pretrained --clip-arch ViT-B-32 --clip-pretrained openai, not cached (offline)",
         ["--clip", "pretrained", "--clip-arch", "ViT-B-32", "--clip-pretrained", "openai"]),
        ("unknown architecture", ["--clip", "random", "--clip-arch", "ViT-B-16-plu"]),
        ("--out /proc/x", ["--out", "/proc/x"]),
        ("--out a file", ["--out", str(a_file)]),
        ("--store under a file", ["--store", str(a_file / "store")]),
        ("textures --root that cannot be written", ["--root", "/proc/textures"]),
        ("--dataset mvtec, --root missing", ["--dataset", "mvtec", "--root", str(tmp / "nowhere")]),
        ("--missing-masks with textures", ["--missing-masks", "warn"]),
        ("--diffusion folder without model_index.json", ["--diffusion", str(tmp / "sd-folder")]),
        ("--diffusion hub id not in the cache (offline)", ["--diffusion", "acme/not-cached-inpainting"]),
        ("--clip-size 224 with the 240 px CLIP", ["--clip-size", "224"]),
        ("--normalization reference (argparse)", ["--normalization", "reference"]),
    ]


def run(argv: list[str], cwd: Path, source: Path | None = None) -> tuple[int, str, float]:
    # offline, with an empty Hugging Face cache (the same answer on every machine)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "HF_HOME": str(cwd / "hf-home")}
    if source is not None:  # another commit's source tree first on the path
        env["PYTHONPATH"] = str(source)
    t0 = time.perf_counter()
    proc = subprocess.run([str(CFVIZ), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    lines = [line for line in proc.stderr.splitlines() if line.strip()] or proc.stdout.splitlines()[-1:]
    return proc.returncode, (lines[-1] if lines else ""), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="source tree of another commit (git archive COMMIT | tar -x "
                                                      "-C DIR): every case also runs on it, for a before/after column")
    args = parser.parse_args()
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, argv in [("cfviz --help", ["--help"]), ("cfviz --version", ["--version"])]:
            code, _, seconds = run(argv, tmp)
            before = run(argv, tmp, args.baseline)[2] if args.baseline else None
            rows.append((name, code, "(help text)" if argv == ["--help"] else "(version)", seconds, before))
        for name, case_args in cases(tmp):
            code, line, seconds = run(["evaluate", *case_args, "--no-progress"], tmp)
            before = run(["evaluate", *case_args, "--no-progress"], tmp, args.baseline)[2] if args.baseline else None
            rows.append((name, code, line, seconds, before))
            print(f"{seconds:6.2f} s ({before or 0:6.2f} s before)  rc={code}  {name}: {line}")
    load_after = load_average()
    extra = (" | seconds on the baseline |", "---|") if args.baseline else (" |", "")
    table = [f"| case | exit code | message (stderr) | seconds to fail{extra[0]}", f"|---|---|---|---|{extra[1]}"]
    for name, code, line, seconds, before in rows:
        cells = f"| {name} | {code} | {line.replace('|', '/')} | {seconds:.2f} |"
        table.append(cells + (f" {before:.2f} |" if before is not None else ""))
    text = "\n".join([
        "# Bad inputs fail fast, in one sentence (issues 10 and 19)",
        "",
        "Command: `.venv/bin/python benchmarks/bench_fail_fast.py"
        + (f" --baseline {args.baseline}` (the source tree of the commit before, run the same way: its "
           "seconds are the last column)  " if args.baseline else "`  "),
        f"Date: {now()}  ",
        f"Machine: {machine()}  ",
        f"Load average (1 min) before / after: {load_before} / {load_after} (the machine is shared; seconds include "
        "Python start-up and imports, so they grow with the load).",
        "",
        "Each case is `cfviz evaluate ARGS --no-progress` run as a new process in an empty folder, offline "
        "(`HF_HUB_OFFLINE=1`, an empty `HF_HOME`). Every case fails before any data set is generated and before "
        "any model is built. No check that needs only a name or a file imports a model library: CLIP "
        "architectures and tags are read from open_clip's files (cfviz.models.clip_catalog), so the CLIP cases "
        "no longer import open_clip and torch (issue 19); only `--device cuda` imports torch, to ask for CUDA.",
        "",
        *table,
        "",
    ])
    print(write_results("fail_fast.md", text))


if __name__ == "__main__":
    main()
