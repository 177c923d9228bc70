"""What the numbered notebooks share: one set-up call, and running them (``cfviz run-notebooks``).

Every notebook in ``notebooks/`` has one cell tagged ``parameters`` (smoke mode, device, models,
data set, categories, shots, folders) and then calls :func:`setup`, which returns a
:class:`NotebookSession`: the run's data set, its capture store (models run once per image, or
never when the store already holds the images), the evaluation tables, the figure folder and the
caption that every figure of a random-weight run must carry.

Smoke mode (the default) needs no weights and no network: tiny offline models with seeded random
weights and a small texture data set generated into the run folder (2 normal training images,
2 normal and 1 image per defect kind in test, per category). With ``smoke=False`` the same cells
run on real weights and MVTec-AD or VisA; only the parameters cell changes.

:func:`run_notebook` executes one notebook with nbclient after inserting an ``injected-parameters``
cell below the ``parameters`` cell (as papermill does); :func:`run_notebooks` runs several.

Example
-------
>>> s = setup(smoke=True, categories=["brick"], run_dir="runs/nb", figures_dir="figures")  # doctest: +SKIP
>>> s.categories, s.note is not None                                                         # doctest: +SKIP
(['brick'], True)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Generator settings of the smoke-mode texture set (per category): small enough for CI.
SMOKE_TEXTURES: dict[str, int] = {"n_train": 2, "n_test_good": 2, "n_per_defect": 1}
#: UNet blocks whose features a notebook run keeps (the block-matching study needs several).
NOTEBOOK_BLOCKS: tuple[str, ...] = ("up_blocks.0", "up_blocks.1", "up_blocks.2")
#: Tag of the cell that holds a notebook's parameters (papermill's convention).
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding ``pyproject.toml`` above ``start`` (default: the working directory).

    Notebooks run from ``notebooks/``; their relative paths (``figures``, ``runs/...``) are taken
    from the project root so that JupyterLab, ``make figures`` and the tests agree. Falls back to
    ``start`` itself outside a checkout.

    >>> project_root("/").is_dir()
    True
    """
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "notebooks").is_dir():
            return d
    return here


def _resolve(path: str | Path, root: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


@dataclass
class NotebookSession:
    """Everything a notebook cell needs after :func:`setup`.

    Attributes
    ----------
    spec: the :class:`~cfviz.evaluation.config.RunSpec` that was run.
    result: the :class:`~cfviz.evaluation.runner.EvaluationResult` (tables, store).
    dataset: the data set (test images and normal training references).
    figures_dir: where :meth:`save` writes figures.
    note: :data:`cfviz.viz.OFFLINE_NOTE` for random-weight models, else None: pass it to every
        figure (``note=s.note``) so that smoke-mode figures say what they show.
    """

    spec: Any
    result: Any
    dataset: Any
    figures_dir: Path
    smoke: bool
    note: str | None
    categories: list[str] = field(default_factory=list)

    @property
    def store(self) -> Any:
        return self.result.store

    @property
    def k_shot(self) -> int:
        """The largest k of the run (0 when only zero-shot was asked for)."""
        return max(self.spec.shots)

    def predict(self, category: str, method: str = "clipfusion", *, shots: int | None = None, seed: int | None = None,
                **scoring: Any) -> Any:
        """:func:`cfviz.experiments.predict` on this run (``scoring`` overrides ScoringConfig fields)."""
        from dataclasses import replace

        from cfviz.evaluation.scoring import predict

        sc = replace(self.spec.scoring, **scoring) if scoring else self.spec.scoring
        return predict(self.store, self.dataset, category, method, shots=self.k_shot if shots is None else shots,
                       seed=self.spec.seeds[0] if seed is None else seed, scoring=sc,
                       extraction=self.spec.extraction)

    def image(self, image_id: str) -> Any:
        """The RGB image (uint8 array) of ``image_id``."""
        rec = next((r for r in self.dataset.records if r.image_id == image_id), None)
        if rec is None:
            raise KeyError(f"image_id {image_id!r} is not in the data set")
        return self.dataset.load(rec).image

    def summary_table(self) -> Any:
        """The run's summary in percent, one row per method and shots (see :func:`summary_table`)."""
        return summary_table(self.result.summary)

    def save(self, fig: Any, name: str) -> list[Path]:
        """Save ``fig`` as PNG and PDF under ``figures_dir`` (see :func:`cfviz.viz.save_figure`)."""
        from cfviz.viz import save_figure

        return save_figure(fig, name, out_dir=self.figures_dir)


def summary_table(summary: Any) -> Any:
    """``result.summary`` (fractions) as people read it: percent, one column per metric, "(%)" in each name.

    Rows are (method, shots); cells are the mean over categories and seeds, rounded to 0.1;
    with several seeds a ``... std (%)`` column follows each metric.

    >>> import pandas as pd
    >>> s = pd.DataFrame({"method": ["m"], "shots": [0], "metric": ["image_auroc"], "mean": [0.9123],
    ...                   "std": [0.0], "n_seeds": [1], "unit": ["fraction"]})
    >>> summary_table(s).to_dict("list")
    {'method': ['m'], 'shots': [0], 'image_auroc (%)': [91.2]}
    """
    import pandas as pd

    from cfviz.evaluation.report import METRIC_ORDER

    if summary is None or len(summary) == 0:
        return pd.DataFrame(columns=["method", "shots"])
    unit = set(summary["unit"]) if "unit" in summary else {"fraction"}
    if unit != {"fraction"}:
        raise ValueError(f"summary is in {sorted(unit)}; summary_table expects result.summary (fractions)")
    metrics = [m for m in METRIC_ORDER if m in set(summary["metric"])]
    metrics += sorted(set(summary["metric"]) - set(metrics))
    several = bool((summary["n_seeds"] > 1).any())
    out = summary.pivot_table(index=["method", "shots"], columns="metric", values=["mean", "std"])
    table = pd.DataFrame(index=out.index)
    for m in metrics:
        table[f"{m} (%)"] = (100 * out[("mean", m)]).round(1)
        if several:
            table[f"{m} std (%)"] = (100 * out[("std", m)]).round(1)
    return table.reset_index()


def run_spec(*, smoke: bool = True, device: str = "cpu", clip_model: str = "tiny",
             clip_arch: str = "ViT-B-16-plus-240", clip_pretrained: str | None = "laion400m_e32",
             diffusion_model: str = "tiny", dataset: str = "textures", data_root: str | Path | None = None,
             categories: Sequence[str] | None = ("brick",), shots: Sequence[int] = (0, 1),
             seeds: Sequence[int] = (0,), timesteps: Sequence[int] | None = None,
             blocks: Sequence[str] = NOTEBOOK_BLOCKS, run_dir: str | Path = "runs/notebooks",
             state: str | None = None, tokens: str | None = None) -> Any:
    """The :class:`~cfviz.evaluation.config.RunSpec` of a notebook's parameters.

    ``state``: the defect word(s) of the prompt whose cross-attention is stored (default ``"damage"``;
    ``"crack damage"`` stores two tokens for the explorer's token menu). ``tokens``: ``"all"`` stores
    every prompt token's cross-attention too (the explorer's words tab; :class:`ExtractionConfig`
    ``tokens``), default the language words only.

    ``smoke=True`` forces tiny offline models and a small texture set generated under
    ``run_dir/textures-smoke`` (or ``data_root``), whatever the model and data set parameters say.

    >>> run_spec(smoke=True, run_dir="/tmp/x").models.diffusion
    'tiny'
    """
    from cfviz.evaluation.config import ExtractionConfig, ModelChoice, RunSpec

    if isinstance(categories, str):
        categories = [categories]
    if not shots or any(int(k) < 0 for k in shots):
        raise ValueError(f"shots must be a non-empty list of k >= 0 (e.g. [0, 1]), got {shots!r}")
    extraction = ExtractionConfig(features=tuple(blocks),
                                  **({"timesteps": tuple(int(t) for t in timesteps)} if timesteps else {}),
                                  **({"state": str(state)} if state else {}),
                                  **({"tokens": str(tokens)} if tokens else {}))
    if smoke:
        from cfviz.data.textures import TEXTURE_CATEGORIES, ensure_textures

        cats = list(categories) if categories else ["brick"]
        bad = [c for c in cats if c not in TEXTURE_CATEGORIES]
        if bad:
            raise ValueError(f"smoke mode uses the texture data set; categories must be among "
                             f"{TEXTURE_CATEGORIES}, got {bad}")
        data_root = Path(data_root) if data_root else Path(run_dir) / "textures-smoke"
        ensure_textures(data_root, categories=cats, **SMOKE_TEXTURES)
        dataset, categories, models = "folder", cats, ModelChoice(device=device)
    else:
        models = ModelChoice(clip=clip_model, clip_arch=clip_arch, clip_pretrained=clip_pretrained,
                             diffusion=diffusion_model, device=device,
                             dtype="float16" if str(device).startswith("cuda") else "float32")
    return RunSpec(dataset=dataset, root=None if data_root is None else str(data_root),
                   categories=tuple(categories) if categories else None, methods=("clipfusion", "winclip"),
                   shots=tuple(int(k) for k in shots), seeds=tuple(int(s) for s in seeds), models=models,
                   extraction=extraction)


def setup(*, smoke: bool = True, run_dir: str | Path = "runs/notebooks", figures_dir: str | Path = "figures",
          progress: bool = True, **params: Any) -> NotebookSession:
    """Open the data set, fill the capture store (models run only for missing images), score.

    ``params`` are those of :func:`run_spec`. Relative folders are taken from the project root
    (:func:`project_root`). Notebooks sharing ``run_dir`` share the store: the first one runs the
    models, the others only read it. With ``progress`` (the default) a line says what is being
    built and where, progress bars follow the extraction and the scoring (a widget in Jupyter,
    text elsewhere), and a last line says how long it took: the first cell is never silent.
    """
    from cfviz.evaluation.plan import plan_run
    from cfviz.evaluation.runner import evaluate

    t0 = time.perf_counter()
    root = project_root()
    run = _resolve(run_dir, root)
    if params.get("data_root") is not None:
        params["data_root"] = _resolve(params["data_root"], root)
    spec = run_spec(smoke=smoke, run_dir=run, **params)
    tag = "smoke" if smoke else f"{spec.dataset}-{spec.models.clip}-{Path(str(spec.models.diffusion)).name}"
    if params.get("state") and spec.extraction.state != "damage":
        tag += "-" + "-".join(spec.extraction.state_tokens)  # other prompt words: another store, not a refusal
    if spec.extraction.tokens != "language":
        tag += f"-tokens-{spec.extraction.tokens}"  # every prompt token stored: another store too
    plan = plan_run(spec, run / tag, run / tag / "store")  # checked and resolved, as evaluate does
    if progress:
        lacking, total = _images_to_compute(plan)
        cats = ", ".join(plan.categories)
        if lacking:
            print(f"capture store {plan.store_dir}: running the models for the {lacking} of {total} images it lacks "
                  f"({'about a minute on CPU in smoke mode' if smoke else 'minutes to hours'}), then scoring "
                  f"{cats} ...", flush=True)
        else:
            print(f"capture store {plan.store_dir}: all {total} images stored, no model runs; scoring {cats} ...",
                  flush=True)
    result = evaluate(spec, run / tag, store_dir=run / tag / "store", progress=progress)
    if progress:
        print(f"ready in {time.perf_counter() - t0:.0f} s: {len(result.store)} images in the store", flush=True)
    from cfviz.viz.style import OFFLINE_NOTE

    return NotebookSession(spec=spec, result=result, dataset=plan.dataset, figures_dir=_resolve(figures_dir, root),
                           smoke=smoke, note=OFFLINE_NOTE if spec.models.random_weights else None,
                           categories=list(plan.categories))


def _images_to_compute(plan: Any) -> tuple[int, int]:
    """(images the run still has to compute, images it uses): what the plan's store lacks."""
    from cfviz.capture.store import CaptureStore

    ids = [r.image_id for r in plan.records]
    if not (plan.store_dir / "store.json").exists():
        return len(ids), len(ids)
    return len(CaptureStore(plan.store_dir, readonly=True).missing(ids)), len(ids)


# ---------------------------------------------------------------------------------- execution
def find_notebooks(folder: str | Path, names: Sequence[str] = ()) -> list[Path]:
    """The numbered notebooks of ``folder`` (``NN_name.ipynb``), sorted; ``names`` selects by prefix or stem."""
    nbs = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return nbs
    chosen = []
    for n in names:
        hits = [p for p in nbs if p.stem == n or p.stem.startswith(str(n)) or p.name == n]
        if not hits:
            raise ValueError(f"no notebook matches {n!r}; available: {[p.stem for p in nbs]}")
        chosen += [p for p in hits if p not in chosen]
    return chosen


def inject_parameters(nb: Any, parameters: Mapping[str, Any]) -> Any:
    """Insert an ``injected-parameters`` cell after the ``parameters`` cell (replacing an old one).

    Values are written with ``repr`` and must be Python literals (str, int, float, bool, None,
    lists, tuples, dicts).
    """
    import nbformat

    cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    idx = next((i for i, c in enumerate(cells) if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])), None)
    if idx is None:
        raise ValueError("the notebook has no cell tagged 'parameters'; tag the cell holding its settings")
    if parameters:
        src = "# Parameters injected by cfviz.notebooks\n" + "\n".join(
            f"{k} = {json_safe_repr(v)}" for k, v in parameters.items())
        cell = nbformat.v4.new_code_cell(src, metadata={"tags": [INJECTED_TAG]})
        cells.insert(idx + 1, cell)
    nb.cells = cells
    return nb


def json_safe_repr(value: Any) -> str:
    """``repr`` of a literal, refusing anything that would not read back as the same value."""
    import ast

    if isinstance(value, Path):
        value = str(value)
    text = repr(value)
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise TypeError(f"parameter value {value!r} is not a Python literal; pass str, numbers, bools, None "
                        "or lists/dicts of them") from None
    return text


def _cell_summary(source: str, width: int = 60) -> str:
    """The first line of a cell that is not a comment, cut to ``width`` characters."""
    lines = [ln.strip() for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    first = lines[0] if lines else "(comments only)"
    return first if len(first) <= width else first[:width - 3] + "..."


def _streaming_client(nb: Any, log: Any, **kwargs: Any) -> Any:
    """An nbclient NotebookClient that reports each code cell as it finishes and forwards the kernel's
    printed lines (``log(text)`` per line) while the cell runs."""
    from nbclient import NotebookClient

    n_code = sum(c.cell_type == "code" for c in nb.cells)
    started: dict[int, float] = {}
    done = [0]

    class Client(NotebookClient):  # type: ignore[misc]
        def output(self, outs: Any, msg: Any, display_id: Any, cell_index: int) -> Any:
            if msg.get("msg_type") == "stream":
                for line in str(msg["content"].get("text", "")).replace("\r", "\n").splitlines():
                    if line.strip():
                        log(f"    | {line.rstrip()}")
            return super().output(outs, msg, display_id, cell_index)

    def start(cell: Any, cell_index: int, **_: Any) -> None:
        started[cell_index] = time.perf_counter()

    def complete(cell: Any, cell_index: int, **_: Any) -> None:
        if cell.cell_type != "code":
            return
        done[0] += 1
        dt = time.perf_counter() - started.get(cell_index, time.perf_counter())
        log(f"  cell {done[0]}/{n_code} done in {dt:.1f} s: {_cell_summary(cell.source)}")

    return Client(nb, on_cell_start=start, on_cell_executed=complete, **kwargs)


def run_notebook(path: str | Path, parameters: Mapping[str, Any] | None = None, *, output: str | Path | None = None,
                 timeout: int = 600, kernel_name: str = "python3", cwd: str | Path | None = None,
                 log: Any = None) -> Any:
    """Execute a notebook (parameters injected) and return the executed notebook node.

    ``output``: also write the executed notebook there (never over the source: committed
    notebooks carry no outputs). ``log``: called with one line per finished code cell and per
    line the kernel prints (e.g. ``print``; the store build says what it does), as it happens.
    Errors raise ``nbclient.exceptions.CellExecutionError`` naming the failing cell.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = inject_parameters(nbformat.read(path, as_version=4), parameters or {})
    kwargs = {"timeout": timeout, "kernel_name": kernel_name, "resources": {"metadata": {"path": str(cwd or path.parent)}}}
    client = NotebookClient(nb, **kwargs) if log is None else _streaming_client(nb, log, **kwargs)
    client.execute()
    if output is not None:
        if Path(output).resolve() == path.resolve():
            raise ValueError("output must differ from the notebook itself: committed notebooks stay without outputs")
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(output))
    return nb


def _say(line: str) -> None:
    print(line, flush=True)  # a pipe (CI log, `| tee`) shows each line when it happens


def run_notebooks(folder: str | Path, names: Sequence[str] = (), *, parameters: Mapping[str, Any] | None = None,
                  executed_dir: str | Path | None = None, timeout: int = 600,
                  log: Any = None) -> dict[str, float]:
    """Run the chosen notebooks in order; return ``{stem: seconds}``. Stops at the first failure.

    ``log`` (default: print, flushed at once) gets a line per notebook, per finished cell and per line
    the kernel prints, while they run (see :func:`run_notebook`).
    """
    log = log or _say
    times: dict[str, float] = {}
    for nb_path in find_notebooks(folder, names):
        t0 = time.perf_counter()
        log(f"running {nb_path.name} ...")
        out = None if executed_dir is None else Path(executed_dir) / nb_path.name
        run_notebook(nb_path, parameters, output=out, timeout=timeout, log=log)
        times[nb_path.stem] = time.perf_counter() - t0
        log(f"  done in {times[nb_path.stem]:.1f} s")
    return times


def output_problems(nb_path: str | Path) -> list[str]:
    """Why a committed notebook is not clean: cells with outputs or execution counts (empty = clean)."""
    data = json.loads(Path(nb_path).read_text(encoding="utf-8"))
    problems = []
    for i, cell in enumerate(data.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell['execution_count']}")
    return problems


# ---------------------------------------------------------------------------------- stripping
#: Cell metadata that only records a run (JupyterLab's execution timing); removed with the outputs.
RUN_CELL_METADATA = ("execution",)
#: Notebook metadata that only records a run (saved ipywidgets state, e.g. notebook 02's explorer).
RUN_NOTEBOOK_METADATA = ("widgets",)


def strip_notebook(nb: dict[str, Any]) -> dict[str, Any]:
    """``nb`` (notebook JSON as a dict) without outputs, execution counts and run-only metadata.

    Works in place and returns ``nb``; idempotent.

    >>> nb = {"cells": [{"cell_type": "code", "source": "1", "metadata": {"execution": {}},
    ...                  "execution_count": 3, "outputs": [{"output_type": "stream", "text": "1"}]}],
    ...       "metadata": {"widgets": {}}}
    >>> strip_notebook(nb) == {"cells": [{"cell_type": "code", "source": "1", "metadata": {},
    ...                                   "execution_count": None, "outputs": []}], "metadata": {}}
    True
    """
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in RUN_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
    for key in RUN_NOTEBOOK_METADATA:
        nb.get("metadata", {}).pop(key, None)
    return nb


def strip_text(text: str) -> str:
    """The notebook file ``text`` without outputs (see :func:`strip_notebook`).

    A notebook that is already clean comes back unchanged byte for byte, so the git filter
    never marks an untouched notebook as modified; one that was not is written as nbformat
    writes it (one-space indent, sorted keys).
    """
    nb = json.loads(text)
    before = json.dumps(nb, sort_keys=True)
    strip_notebook(nb)
    if json.dumps(nb, sort_keys=True) == before:
        return text
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _strip_main(paths: Sequence[str]) -> int:
    """``python -m cfviz.notebooks strip [FILE ...]``: files in place, or stdin to stdout (a git filter)."""
    if not paths:
        text = sys.stdin.buffer.read().decode("utf-8")
        try:
            out = strip_text(text)
        except json.JSONDecodeError:
            out = text  # not a notebook git can use: hand it back untouched rather than fail the commit
        sys.stdout.buffer.write(out.encode("utf-8"))
        return 0
    for p in map(Path, paths):
        text = p.read_text(encoding="utf-8")
        out = strip_text(text)
        if out != text:
            p.write_text(out, encoding="utf-8")
            print(f"stripped {p}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cfviz.notebooks``; the one subcommand is ``strip``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "strip":
        print("usage: python -m cfviz.notebooks strip [NOTEBOOK ...]  (no file: stdin to stdout, "
              "as the git filter 'cfviz-strip' that `make` sets up)", file=sys.stderr)
        return 2
    return _strip_main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
