"""MapDiff's language map from several denoiser families on the same images (notebook 09).

:func:`family_runs` evaluates zero-shot MapDiff (M_diff_L, the cross- or joint attention of the
[state] word) with each diffusion pipeline on one data set, each into a store of its own;
:func:`family_table` puts their metrics side by side and :func:`family_language_figure` draws two
families' maps of one image on one colour scale with their difference
(:func:`cfviz.viz.compare.compare_store_maps`).

Smoke mode uses the tiny offline pipelines (``tiny`` = SD2 inpainting, ``tiny-sd3``, ...) on the
small generated texture set: its maps and numbers show that the pipeline runs for each family,
not which family localises anomalies better.

Example
-------
>>> runs = family_runs(["tiny", "tiny-sd3"], run_dir="runs/nb", progress=False)  # doctest: +SKIP
>>> family_table(runs)                                                             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How each family is called in tables and figures.
FAMILY_NAMES = {"sd": "SD 1.x/2.x UNet", "sdxl": "SDXL UNet", "sd3": "SD3 MMDiT", "flux": "FLUX transformer",
                "pixart": "PixArt DiT"}
#: Said on every smoke-mode figure and table of the family comparison.
TINY_FAMILIES_NOTE = ("Offline tiny random-weight pipelines: these maps show that MapDiff runs on each family, "
                      "not which family localises anomalies better.")
#: Diffusion input side in smoke mode (the tiny models are fast at it; 256 / 16 = 16x16 maps for DiTs).
SMOKE_DIFFUSION_SIZE = 256


@dataclass
class FamilyRuns:
    """One zero-shot MapDiff evaluation per diffusion pipeline, on the same images.

    ``results`` maps a display label (``"SD3 MMDiT (tiny-sd3)"``) to its
    :class:`~cfviz.evaluation.runner.EvaluationResult`; ``note`` is :data:`TINY_FAMILIES_NOTE`
    when any model has random weights (pass it to figures).
    """

    results: dict[str, Any]
    dataset: Any
    note: str | None
    figures_dir: Path = Path("figures")

    @property
    def labels(self) -> list[str]:
        return list(self.results)

    def save(self, fig: Any, name: str) -> list[Path]:
        """Save ``fig`` as PNG and PDF under ``figures_dir`` (:func:`cfviz.viz.save_figure`)."""
        from cfviz.viz import save_figure

        return save_figure(fig, name, out_dir=self.figures_dir)


def family_label(diffusion: str) -> str:
    """``"SD3 MMDiT (tiny-sd3)"``: the family's name and the ``--diffusion`` value.

    >>> family_label("tiny-flux-fill"), family_label("tiny")
    ('FLUX transformer (tiny-flux-fill)', 'SD 1.x/2.x UNet (tiny)')
    """
    from cfviz.evaluation.config import ModelChoice
    from cfviz.evaluation.families import diffusion_family

    family = diffusion_family(ModelChoice(diffusion=diffusion))
    return f"{FAMILY_NAMES.get(family, family)} ({Path(str(diffusion)).name})"


def family_runs(diffusion_models: Sequence[str], *, smoke: bool = True, device: str = "cpu",
                clip_model: str = "tiny", dataset: str = "textures", data_root: str | Path | None = None,
                categories: Sequence[str] | None = ("brick",), run_dir: str | Path = "runs/notebooks",
                figures_dir: str | Path = "figures", diffusion_size: int | None = None,
                progress: bool = True) -> FamilyRuns:
    """Evaluate zero-shot MapDiff with each pipeline of ``diffusion_models`` (any ``--diffusion`` value).

    Each run has its own store under ``run_dir/families/<name>`` (a family's store refuses
    another family's entries); reruns read the stores and run no model. ``smoke=True`` uses the
    generated texture set of :func:`cfviz.notebooks.run_spec` and 256 px diffusion inputs;
    ``diffusion_models`` must then be tiny names. Relative folders are taken from the project
    root (:func:`cfviz.notebooks.project_root`), as notebooks do.
    """
    from cfviz.evaluation.config import ExtractionConfig, ModelChoice
    from cfviz.evaluation.plan import open_run_dataset
    from cfviz.evaluation.runner import evaluate
    from cfviz.notebooks import project_root, run_spec

    models = [str(m) for m in diffusion_models]
    if len(models) < 2:
        raise ValueError(f"diffusion_models must name at least two pipelines to compare, got {models}")
    if smoke and not all(m == "tiny" or m.startswith("tiny-") for m in models):
        raise ValueError(f"smoke mode runs the tiny offline pipelines (tiny, tiny-sd3, ...), got {models}")
    def resolve(path: str | Path) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else project_root() / p

    root = resolve(run_dir)
    base = run_spec(smoke=smoke, device=device, clip_model=clip_model, dataset=dataset, data_root=data_root,
                    categories=categories, shots=(0,), run_dir=root)
    size = diffusion_size or (SMOKE_DIFFUSION_SIZE if smoke else base.extraction.diffusion_size)
    results: dict[str, Any] = {}
    for model in models:
        spec = dataclasses.replace(
            base, methods=("mapdiff",), shots=(0,),
            models=dataclasses.replace(base.models, diffusion=model, dtype="float32" if smoke else base.models.dtype),
            extraction=ExtractionConfig(diffusion_size=size))  # the family's own layers (families.py)
        ModelChoice(**dataclasses.asdict(spec.models))  # checked as a user's choice would be
        out = root / "families" / (f"smoke-{model}" if smoke else Path(model).name)
        if progress:
            print(f"{family_label(model)}: store {out / 'store'}", flush=True)
        results[family_label(model)] = evaluate(spec, out, store_dir=out / "store", progress=progress)
    random = any(r.random_weights for r in results.values())
    return FamilyRuns(results=results, dataset=open_run_dataset(base), note=TINY_FAMILIES_NOTE if random else None,
                      figures_dir=resolve(figures_dir))


def family_table(runs: FamilyRuns) -> Any:
    """Zero-shot MapDiff per family, in %: one row per family, one column per metric."""
    import pandas as pd

    from cfviz.notebooks import summary_table

    rows = []
    for label, result in runs.results.items():
        table = summary_table(result.summary)
        table.insert(0, "family", label)
        rows.append(table)
    return pd.concat(rows, ignore_index=True).drop(columns=["method", "shots"], errors="ignore")


def family_image(runs: FamilyRuns, category: str | None = None) -> str:
    """An anomalous test image with a defect mask that every run stored (the first by id)."""
    stores = [r.store for r in runs.results.values()]
    for rec in sorted(runs.dataset.records, key=lambda r: r.image_id):
        if (rec.split == "test" and rec.label == 1 and rec.mask_path is not None
                and (category is None or rec.category == category) and all(rec.image_id in s for s in stores)):
            return rec.image_id
    raise ValueError("no anomalous test image with a mask is in every store; run family_runs on a data set with masks")


def family_language_map(runs: FamilyRuns, family: str, image_id: str) -> Any:
    """M_diff_L of one image from one family's store, min-max scaled to [0, 1].

    Families attend in different units (a cross-attention softmax over the text tokens; a joint
    softmax over image and text keys, of which the text's share is kept), so each map is scaled
    to its own range, as scoring's normalisation does before maps are compared or fused.
    """
    import numpy as np

    from cfviz.diffusion.mapdiff import language_map
    from cfviz.evaluation.prompt_tokens import language_words

    entry = runs.results[family].store[image_id]
    m = language_map(entry.cache(blocks=[]), tokens=language_words(entry), min_resolution=1)[0].float().numpy()
    lo, hi = float(np.min(m)), float(np.max(m))
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def family_language_figure(runs: FamilyRuns, image_id: str | None = None, *, families: Sequence[str] | None = None,
                           **options: Any) -> Any:
    """Two families' M_diff_L of one image, each min-max scaled, on one colour scale, and their difference.

    ``families``: two labels of ``runs`` (default: the first two). The image is underlaid and
    its defect outlined; ``options`` go to :func:`cfviz.viz.compare.compare_maps`.
    """
    from cfviz.viz.compare import compare_maps

    a, b = list(families) if families is not None else runs.labels[:2]
    image_id = image_id or family_image(runs)
    rec = next(r for r in runs.dataset.records if r.image_id == image_id)
    sample = runs.dataset.load(rec)
    options.setdefault("note", runs.note)
    options.setdefault("title", f"MapDiff language map (M_diff_L) of {image_id}, one per denoiser family")
    options.setdefault("label", "M_diff_L (min-max per map)")
    options.setdefault("vmin", 0.0)  # both maps are min-max scaled: the bar shows the whole [0, 1]
    options.setdefault("vmax", 1.0)
    return compare_maps(family_language_map(runs, a, image_id), family_language_map(runs, b, image_id),
                        labels=(a, b), image=sample.image, mask=sample.mask, **options)
