"""``accelerate launch -m cfviz evaluate``: every process extracts its share, one process scores.

Two CPU processes over one small generated texture set (one category of 5 test images, 64 px,
2 timesteps, batch size 2, k-shot references: 5 planned batches) must write the store and
``results.csv`` of one single-process run, byte for byte; the non-main process prints nothing.
Then each launched process reports which images it was responsible for: process ``p`` of ``n``
takes exactly the batches of ``--shard p/n``.

Launcher: ``accelerate launch --multi_gpu --num_processes 2`` (torchrun underneath; with
``--device cpu`` the processes talk over gloo). ``accelerate launch --cpu --num_processes 2``
starts ONE process in accelerate 1.x unless an MPI hostfile is given, so it cannot test a split.

CPU kernels give thread-count-dependent numbers, and a launcher sets one thread per process
(``OMP_NUM_THREADS=1``): both runs here use one thread. Nothing touches the network:
``HF_HUB_OFFLINE=1``, accelerate's config comes from flags and an empty ``HF_HOME``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

VENV_BIN = Path(sys.executable).parent
ACCELERATE = shutil.which("accelerate", path=str(VENV_BIN)) or shutil.which("accelerate")

# run under `accelerate launch`: evaluate() through the Python API, each process writes its report
PROBE = r"""
import json, sys
from pathlib import Path
from accelerate import PartialState
from cfviz.cli import build_parser
from cfviz.commands.evaluate import spec_from_args
from cfviz.errors import ConfigError
from cfviz.experiments import evaluate

out, argv = Path(sys.argv[1]), sys.argv[2:]
args = build_parser().parse_args(argv)
report = evaluate(spec_from_args(args), out, store_dir=args.store, progress=False)
state = PartialState()
try:
    evaluate(spec_from_args(args), out, store_dir=args.store, shard=(0, 2), progress=False)
    refusal = None
except ConfigError as exc:
    refusal = exc.phrase(args.cli_flags)
row = {"index": state.process_index, "count": state.num_processes, "total": getattr(report, "total", None),
       "extraction": str(getattr(report, "extraction", report)), "refusal": refusal}
(out / f"process-{state.process_index}.json").write_text(json.dumps(row))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict[str, str]]:
    from cfviz.data.textures import generate_textures

    base = tmp_path_factory.mktemp("accelerate")
    root = generate_textures(base / "tex", seed=3, image_size=64, n_train=3, n_test_good=3, n_per_defect=1,
                             categories=["grass"], defect_kinds=["stain", "hole"])
    args = ["evaluate", "--dataset", "folder", "--root", str(root), "--method", "clipfusion", "--shots", "0", "1",
            "--seeds", "0", "1", "--batch-size", "2", "--timesteps", "100", "400", "--diffusion-size", "64",
            "--eval-size", "64", "--min-resolution", "1", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(base / "hf_home"), "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "CFVIZ_CACHE_DIR": str(base / "cfviz_cache"), "PYTHONUNBUFFERED": "1"}
    for key in [k for k in env if k.startswith("ACCELERATE_") or k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")]:
        del env[key]  # a launcher around pytest must not leak into the runs
    return base, args, env


def _launch(target: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    if ACCELERATE is None:
        pytest.skip("the accelerate command is not installed")
    cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_free_port()), *target]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_two_launched_processes_write_the_single_process_store_and_results(setup, tmp_path: Path) -> None:
    from cfviz.evaluation.extraction import run_batches
    from cfviz.evaluation.plan import plan_run

    base, args, env = setup
    single = subprocess.run([sys.executable, "-m", "cfviz", *args, "--out", str(tmp_path / "single")], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    launched = _launch(["-m", "cfviz", *args, "--out", str(tmp_path / "launched")], env, tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    expected, got = _files(tmp_path / "single" / "store"), _files(tmp_path / "launched" / "store")
    assert sorted(got) == sorted(expected) and len(expected) > 10
    assert [n for n in expected if got[n] != expected[n]] == []
    assert (tmp_path / "launched" / "results.csv").read_bytes() == (tmp_path / "single" / "results.csv").read_bytes()
    # one process scored and printed; the other exited 0 without a word
    assert launched.stdout.count("# cfviz evaluation") == 1 and launched.stdout.count("wrote ") == 1

    # each process's share is --shard p/2's; --shard itself is refused under the launcher
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    again = _launch([str(probe), str(tmp_path / "launched"), *args], env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = [json.loads((tmp_path / "launched" / f"process-{p}.json").read_text()) for p in (0, 1)]
    assert [(r["index"], r["count"]) for r in rows] == [(0, 2), (1, 2)]

    from cfviz.commands.evaluate import spec_from_args
    from cfviz.cli import build_parser

    spec = spec_from_args(build_parser().parse_args(args))
    records = plan_run(spec, tmp_path / "plan").records  # what the run extracts: tests, then references
    shares = [sum(len(b) for b in run_batches(records, 2, (p, 2))) for p in (0, 1)]
    assert rows[1]["total"] == shares[1] and 0 < shares[1] < len(records)
    assert rows[0]["extraction"].startswith(f"0 new, {len(records)} already stored, {len(records)} in all")
    for r in rows:
        assert "--shard 0/2 cannot be combined with accelerate launch" in r["refusal"]
