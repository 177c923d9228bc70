"""Before/after comparisons of AA-CLIP for notebooks: text-anchor separation, maps, metrics.

:func:`study` trains (or resumes) adapters on one data set and returns the CLIP, the untrained
and the trained AA-CLIP and the evaluation set; :func:`anchor_table`, :func:`compare_maps`
and :func:`metrics_table` compare plain CLIP (PatchCLIP's language map), AA-CLIP before
training and after it. In smoke mode (tiny random-weight CLIP, small generated textures:
train on ``brick``, evaluate zero-shot on ``grass``) the numbers show that the pipeline runs,
not how well AA-CLIP detects anomalies.

Example
-------
>>> s = study(smoke=True, run_dir="/tmp/cfviz-aaclip-doctest", progress=False)  # doctest: +SKIP
>>> anchor_table(s)                                                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfviz.clip.aaclip.model import AAClip, released_image_scores, upsample_maps

#: the small texture set of smoke mode (64 px; 2 good + 4 defective test images per category)
SMOKE_TEXTURES = {"image_size": 64, "n_train": 1, "n_test_good": 2, "n_per_defect": 1}
SMOKE_NOTE = "tiny random-weight CLIP: shows that the pipeline runs, not detection quality"


@dataclass
class Study:
    """What :func:`study` made."""

    bundle: Any
    before: AAClip
    after: AAClip
    report: Any
    eval_set: Any
    eval_categories: list[str]
    note: str | None = None

    def history(self) -> Any:
        """Mean loss per (stage, epoch) as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in h.items() if k != "losses"} for h in self.report.history])


def study(*, smoke: bool = True, run_dir: str | Path = "runs/notebooks", device: str = "cpu",
          clip_model: str = "tiny", clip_arch: str = "ViT-L-14-336", clip_pretrained: str = "openai",
          train_dataset: str = "visa", train_root: str | None = None, train_categories: Sequence[str] | None = None,
          eval_dataset: str = "mvtec", eval_root: str | None = None, eval_categories: Sequence[str] | None = None,
          shots: int | None = None, train: Any = None, progress: bool = False) -> Study:
    """Train (or resume) AA-CLIP and open the evaluation set.

    Everything goes under ``run_dir/aaclip`` (checkpoints, and the smoke data), so notebooks
    01-06 and this study can share one ``run_dir`` (``cfviz run-notebooks --run-dir``) without
    AA-CLIP files landing among the capture store's.

    ``smoke=True`` ignores the model and data parameters: tiny CLIP, textures generated under
    ``run_dir/aaclip/textures``, training on ``brick`` and evaluation on ``grass``, 2 epochs per stage
    with a larger stage-1 learning rate (1e-3) so that the anchors visibly move in a few steps.
    """
    from cfviz import models
    from cfviz.clip.aaclip.train import TrainConfig, train_aaclip
    from cfviz.data import open_dataset
    from cfviz.notebooks import project_root

    run = Path(run_dir)
    run = (run if run.is_absolute() else project_root() / run) / "aaclip"
    if smoke:
        data = open_dataset("textures", run / "textures", categories_generated=("brick", "grass"), **SMOKE_TEXTURES)
        train_set, eval_set = data.filter(category="brick"), data.filter(category="grass")
        bundle = models.tiny_clip(seed=0, device=device)
        train = train or TrainConfig(stage1_epochs=2, stage2_epochs=2, stage1_batch_size=4, stage2_batch_size=4,
                                     stage1_lr=1e-3, seed=0)
        tag = "smoke"
    else:
        train_set = open_dataset(train_dataset, train_root, categories=train_categories, split="test")
        eval_set = open_dataset(eval_dataset, eval_root, categories=eval_categories, split="test")
        if clip_model == "pretrained":
            bundle = models.load_clip(clip_arch, clip_pretrained, device=device)
        elif clip_model == "random":
            bundle = models.random_clip(clip_arch, device=device)
        else:
            bundle = models.tiny_clip(seed=0, device=device)
        train = train or TrainConfig(shots=shots)
        tag = f"{train_dataset}-{clip_model}-{shots or 'full'}"
    report = train_aaclip(bundle, train_set, run / tag, train=train, progress=progress)
    before = AAClip(bundle, report.model.config, seed=report.model.seed)
    note = SMOKE_NOTE if bundle.weights == "random" else None
    cats = sorted({r.category for r in eval_set.records})
    return Study(bundle=bundle, before=before, after=report.model, report=report, eval_set=eval_set,
                 eval_categories=cats, note=note)


def anchor_table(s: Study, class_names: Sequence[str] | None = None) -> Any:
    """Cosine ``<T_N, T_A>`` per class for plain CLIP (same prompts), AA-CLIP before and after."""
    import pandas as pd

    from cfviz.clip.text import text_anchors

    names = list(class_names or s.eval_categories)
    rows = []
    before, after = s.before.text_separation(names), s.after.text_separation(names)
    for n in names:
        plain = text_anchors(s.bundle, prompts=s.after.config.prompts.sentences(n), cache=False)
        rows.append({"class": n, "plain CLIP": float(plain[0] @ plain[1]), "AA-CLIP before": before[n],
                     "AA-CLIP after": after[n]})
    return pd.DataFrame(rows).set_index("class")


@dataclass
class ComparisonMaps:
    """Maps ``(N, gh, gw)`` and image scores ``(N,)`` of plain CLIP, AA-CLIP before and after."""

    image_ids: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    labels: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def compare_maps(s: Study, *, max_images: int | None = None, batch_size: int = 8) -> ComparisonMaps:
    """Run the three models on the evaluation images (anomalous first when ``max_images`` cuts)."""
    from cfviz.clip.patchclip import PatchCLIP
    from cfviz.data.transforms import clip_batch

    recs = sorted(s.eval_set.records, key=lambda r: (-r.label, r.image_id))
    recs = recs[:max_images] if max_images else recs
    out = ComparisonMaps(image_ids=[r.image_id for r in recs], images=[], masks=[],
                         labels=np.array([r.label for r in recs]))
    parts: dict[str, list[Any]] = {}
    for i in range(0, len(recs), batch_size):
        samples = [s.eval_set.load(r) for r in recs[i:i + batch_size]]
        out.images += [np.asarray(x.image) for x in samples]
        out.masks += [np.zeros(np.asarray(x.image).shape[:2], np.uint8) if x.mask is None else np.asarray(x.mask)
                      for x in samples]
        x = clip_batch([sm.image for sm in samples], s.bundle.image_size)
        names = [sm.category for sm in samples]
        with torch.no_grad():
            plain = [PatchCLIP(s.bundle, class_name=n.replace("_", " "), scales=()).predict(x[j:j + 1], few_shot=False)
                     for j, n in enumerate(names)]
        parts.setdefault("plain CLIP", []).append(torch.cat([p.language_map for p in plain]).numpy())
        parts.setdefault("plain CLIP score", []).append(torch.cat([p.image_score for p in plain]).numpy())
        for key, model in (("AA-CLIP before", s.before), ("AA-CLIP after", s.after)):
            # AA-CLIP at its own input size (518 px on ViT-L-14-336), resized from the originals
            xa = x if model.image_size == s.bundle.image_size else clip_batch([sm.image for sm in samples],
                                                                                model.image_size)
            r = model.predict(xa, names)
            parts.setdefault(key, []).append(r.anomaly_map.numpy())
            parts.setdefault(f"{key} score", []).append(r.image_score.numpy())
    models = {"AA-CLIP before": s.before, "AA-CLIP after": s.after}
    for key in ("plain CLIP", *models):
        out.maps[key] = np.concatenate(parts[key])
        raw = np.concatenate(parts[f"{key} score"])
        # AA-CLIP: the released score over the pixel maps at its input size, as released test.py computes it
        out.scores[key] = raw if key == "plain CLIP" else released_image_scores(out.maps[key], raw,
                                                                                size=models[key].image_size)
    return out


def metrics_table(c: ComparisonMaps, *, eval_size: int = 64) -> Any:
    """Pixel and image AUROC / AP of each model on the compared images (masks at ``eval_size``)."""
    import pandas as pd

    from cfviz.clip.scores import upsample
    from cfviz.data.transforms import resize_mask
    from cfviz.metrics import image_metrics, pixel_metrics

    masks = np.stack([resize_mask(m, eval_size) for m in c.masks])
    rows = []
    for name, maps in c.maps.items():
        pixel = (upsample(torch.from_numpy(maps), eval_size).numpy() if name == "plain CLIP"
                 else upsample_maps(maps, eval_size))  # AA-CLIP's maps as released: align_corners=True
        px = pixel_metrics(masks, pixel)
        im = image_metrics(c.labels, c.scores[name])
        rows.append({"model": name, "pixel_auroc": px["pixel_auroc"], "pixel_ap": px["pixel_ap"],
                     "image_auroc": im["image_auroc"], "image_ap": im["image_ap"]})
    return pd.DataFrame(rows).set_index("model")
