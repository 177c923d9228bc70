"""Smoke runs of every method whose stores and ``results.csv`` must not change under a refactor.

Issue 22 (one plan, two packages) promised no behaviour change: this script runs the CLI the way a
user does and writes the SHA-256 of every file of each run's capture store and of its
``results.csv`` to a JSON manifest. Run it on the commit before a change and on the one after,
then compare the two manifests::

    python benchmarks/check_byte_identity.py --out /tmp/before.json          # on the old commit
    python benchmarks/check_byte_identity.py --out /tmp/after.json --compare /tmp/before.json

``--aaclip-checkpoint`` reuses the adapters an earlier run trained (``WORK/aaclip/aaclip.safetensors``;
keep a copy), so that two commits compare even when one of them trains other bytes. Both commits
must run in the same folder (``--work``, default ``WORK``): stores record the checkpoint's path.

The runs (tiny offline models, a small generated texture set of two categories, 64 px):

* ``all-full``: every method (clipfusion, patchclip, mapdiff, winclip, aaclip), shots 0 and 1,
  seeds 0 and 1, the full store form, AA-CLIP adapters trained here by ``cfviz train-aaclip``;
* ``all-compact``: the same with ``--store-form compact``;
* ``clipfusion-sd3``: clipfusion and mapdiff on the tiny SD3 (the family's own settings;
  no CLIP windows: auto resolves them off);
* ``knobs``: clipfusion and patchclip at shots 0 and 2 with AA-CLIP as the CLIP branch, every
  prompt token stored, the object words' attention, per-image noise with two draws, one test
  image per defect type, each method's own score and smoothing, inductive normalisation;
* ``sharded``: ``all-full`` cut as ``--shard 0/2``, ``--shard 1/2``, then the merging run;
* ``accelerate-2``: ``all-full`` under ``accelerate launch`` with two CPU processes (skipped,
  and said so, when accelerate is not installed).

Every run uses one CPU thread (``OMP_NUM_THREADS=1``, as a launcher gives each process), so the
sharded and the launched runs must equal ``all-full`` too (checked here). ``run.json`` and ``summary.md`` are not compared: they
carry paths, versions and wording. Nothing touches the network.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The runs' folder: the same path on every commit, because an AA-CLIP store records the absolute
#: path of its checkpoint (``extraction.aaclip``), so another folder gives other entry files.
WORK = Path(tempfile.gettempdir()) / "cfviz-byte-identity"
COMMON = ["--batch-size", "2", "--timesteps", "100", "400", "--diffusion-size", "64", "--eval-size", "64",
          "--min-resolution", "1", "--no-progress"]
ALL_METHODS = ["--method", "clipfusion", "patchclip", "mapdiff", "winclip", "aaclip", "--shots", "0", "1",
               "--seeds", "0", "1"]


def _env(base: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(base / "hf_home"), "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "CFVIZ_CACHE_DIR": str(base / "cfviz_cache"), "PYTHONUNBUFFERED": "1"}
    for key in [k for k in env if k.startswith("ACCELERATE_") or k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")]:
        del env[key]
    return env


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-4000:]}")


def _digests(out: Path) -> dict[str, str]:
    files = {f"store/{p.relative_to(out / 'store').as_posix()}": p for p in sorted((out / "store").rglob("*"))
             if p.is_file()}
    files["results.csv"] = out / "results.csv"
    return {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_all(work: Path, aaclip: Path | None = None) -> dict[str, dict[str, str]]:
    """Every smoke run in ``work``; ``run name -> {file: sha256}``."""
    from cfviz.data.textures import generate_textures

    env, py = _env(work), [sys.executable, "-m", "cfviz"]
    generate_textures(work / "tex", seed=3, image_size=64, n_train=3, n_test_good=2, n_per_defect=1,
                      categories=["grass", "brick"], defect_kinds=["stain", "hole"])
    data = ["--dataset", "folder", "--root", "tex"]  # paths relative to `work`: stores name no machine folder
    ckpt = "aaclip/aaclip.safetensors"
    if aaclip is None:
        _run([*py, "train-aaclip", *data, "--shots", "2", "--stage1-epochs", "1", "--stage2-epochs", "1",
              "--max-batches", "1", "--clip-arch", "ViT-B-16-plus-240", "--out", "aaclip", "--no-progress"], env, work)
    else:  # the adapters of an earlier run, so that its stores compare whatever wrote the checkpoint
        (work / "aaclip").mkdir(exist_ok=True)
        shutil.copyfile(aaclip, work / ckpt)
    manifest = {"aaclip-checkpoint": {"aaclip.safetensors": hashlib.sha256((work / ckpt).read_bytes()).hexdigest()}}
    runs = {
        "all-full": [*data, *ALL_METHODS, "--aaclip", ckpt, *COMMON],
        "all-compact": [*data, *ALL_METHODS, "--aaclip", ckpt, "--store-form", "compact", *COMMON],
        "clipfusion-sd3": [*data, "--method", "clipfusion", "mapdiff", "--shots", "0", "1", "--diffusion", "tiny-sd3",
                           *COMMON],
        "knobs": [*data, "--method", "clipfusion", "patchclip", "--shots", "0", "2", "--clip-branch", "aaclip",
                  "--aaclip", ckpt, "--tokens", "all", "--language-tokens", "object", "--noise", "per-image",
                  "--noise-draws", "2", "--limit-per-type", "1", "--image-score", "own", "--smoothing", "own",
                  "--normalization", "inductive", *COMMON],
    }
    for name, args in runs.items():
        started = time.perf_counter()
        _run([*py, "evaluate", *args, "--out", name], env, work)
        manifest[name] = _digests(work / name)
        print(f"{name}: {len(manifest[name])} files ({time.perf_counter() - started:.0f} s)", flush=True)
    started = time.perf_counter()  # shards 0/2 and 1/2, then the merging run: the single run's files
    for shard in ("0/2", "1/2", None):
        _run([*py, "evaluate", *runs["all-full"], "--out", "sharded",
              *(["--shard", shard] if shard else [])], env, work)
    manifest["sharded"] = _digests(work / "sharded")
    print(f"sharded: {len(manifest['sharded'])} files ({time.perf_counter() - started:.0f} s)", flush=True)
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        print("accelerate-2: skipped (the accelerate command is not installed)")
        return manifest
    started = time.perf_counter()
    _run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
          "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "cfviz", "evaluate",
          *runs["all-full"], "--out", "accelerate-2"], env, work)
    manifest["accelerate-2"] = _digests(work / "accelerate-2")
    print(f"accelerate-2: {len(manifest['accelerate-2'])} files ({time.perf_counter() - started:.0f} s)", flush=True)
    return manifest


def compare(now: dict[str, dict[str, str]], before: dict[str, dict[str, str]]) -> list[str]:
    """Lines naming every run whose files differ from ``before`` (or are missing on one side)."""
    problems = []
    for run in sorted(set(now) | set(before)):
        a, b = before.get(run, {}), now.get(run, {})
        if not a or not b:
            problems.append(f"{run}: only in the {'new' if b else 'old'} manifest")
            continue
        changed = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
        if changed:
            problems.append(f"{run}: {len(changed)} of {len(set(a) | set(b))} files differ, e.g. {changed[:3]}")
        else:
            print(f"{run}: {len(a)} files byte-identical")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the manifest (JSON) goes")
    parser.add_argument("--compare", type=Path, help="a manifest of an earlier commit to compare with")
    parser.add_argument("--work", type=Path, default=WORK,
                        help=f"the folder the runs write (emptied first; default {WORK})")
    parser.add_argument("--aaclip-checkpoint", type=Path,
                        help="use these AA-CLIP adapters instead of training them (e.g. the earlier run's)")
    args = parser.parse_args(argv)
    if args.compare is not None and not args.compare.is_file():
        parser.error(f"--compare {args.compare} is not a file; write it first with --out on the earlier commit")
    work = args.work.resolve()
    work.parent.mkdir(parents=True, exist_ok=True)
    with open(work.parent / f".{work.name}.lock", "w") as lock:  # one run at a time in this folder
        fcntl.flock(lock, fcntl.LOCK_EX)
        aaclip = None
        if args.aaclip_checkpoint is not None:  # read before the folder (which may hold it) is emptied
            aaclip = work.parent / f".{work.name}-aaclip.safetensors"
            shutil.copyfile(args.aaclip_checkpoint, aaclip)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        manifest = run_all(work, aaclip)
    for cut in ("sharded", "accelerate-2"):  # a run cut in shards or processes writes the single run's files
        if cut in manifest and manifest[cut] != manifest["all-full"]:
            print(f"{cut} differs from all-full")
            return 1
    args.out.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    if args.compare is None:
        return 0
    problems = compare(manifest, json.loads(args.compare.read_text()))
    for line in problems:
        print(line)
    print("byte-identical" if not problems else f"{len(problems)} runs differ")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
