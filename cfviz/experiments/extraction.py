"""Stage 1 of an evaluation: run the models once per image and keep what they produce.

For every image (test images and the normal references that k-shot draws need) the capture
store gets one entry with:

* ``attn/<layer>`` — cross-attention of the [state] tokens at every timestep (M_diff_L's input);
* ``feat/<block>`` — UNet feature maps at every timestep (M_diff_V's input);
* ``clip_emb/...`` — CLIP image, patch and window embeddings (the k-shot visual maps' input);
* ``clip/...`` — zero-shot CLIP scores: PatchCLIP's and WinCLIP's language maps and window scores;
* ``aaclip/...`` — AA-CLIP maps and image score, when ``extraction.aaclip`` names adapters.

Everything later (k-shot memory banks, fusion, metrics, ablations) reads the store and never
re-runs a model. Entries are written atomically one image at a time: an interrupted run resumes
with the images still missing, and ``shard=(i, n)`` splits the images across processes or GPUs
writing into one store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cfviz.capture.store import CaptureStore
from cfviz.experiments.config import ExtractionConfig
from cfviz.experiments.models import LoadedModels


@dataclass
class ExtractionReport:
    """What an extraction pass did."""

    total: int  #: images this pass was responsible for (after sharding)
    already: int  #: of those, already in the store (resumed)
    new: int  #: written now
    seconds: float

    def __str__(self) -> str:
        rate = f", {self.seconds / self.new:.2f} s/image" if self.new else ""
        return f"{self.new} new, {self.already} already stored, {self.total} in all ({self.seconds:.1f} s{rate})"


def store_config(models: LoadedModels, extraction: ExtractionConfig) -> dict[str, Any]:
    """The configuration that identifies a store: models and everything the models were asked."""
    return {**models.info(), "extraction": extraction.to_json()}


def object_name(category: str) -> str:
    """The [object] word(s) of a category: ``"metal_nut"`` -> ``"metal nut"``."""
    return category.replace("_", " ")


def shard_of(items: Sequence[Any], shard: tuple[int, int] | None) -> list[Any]:
    """Items of shard ``i`` of ``n`` (round robin over the given, deterministic order)."""
    if shard is None:
        return list(items)
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    return list(items)[i::n]


def _batches(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def extract(dataset: Any, records: Sequence[Any], models: LoadedModels, extraction: ExtractionConfig,
            store: CaptureStore, *, batch_size: int = 4, shard: tuple[int, int] | None = None,
            progress: bool = True) -> ExtractionReport:
    """Run CLIP and MapDiff over ``records`` that are not yet in ``store``.

    Parameters
    ----------
    dataset:
        The :class:`~cfviz.data.samples.AnomalyDataset` the records come from (it loads pixels).
    records:
        Sample records to process (test images and k-shot references).
    models, extraction:
        Loaded models and what to compute (must match the store's configuration).
    batch_size:
        Images per model call.
    shard:
        ``(i, n)``: process only the i-th of n round-robin shards of ``records`` (sorted by id).
    """
    import torch

    from cfviz.capture import capture
    from cfviz.data.transforms import clip_batch, diffusion_batch
    from cfviz.diffusion.forward import build_prompt, mapdiff_forward
    from cfviz.experiments import aaclip_branch, clip_branch
    from cfviz.utils.progress import progress_bar

    mine = shard_of(sorted(records, key=lambda r: r.image_id), shard)
    todo_ids = set(store.missing([r.image_id for r in mine]))
    todo = [r for r in mine if r.image_id in todo_ids]
    start = time.perf_counter()
    bar = progress_bar(total=len(todo), desc="models", unit="img", disable=not progress)
    device = models.pipe.unet.device
    aaclip = aaclip_branch.load(models.clip, extraction) if todo else None  # None unless extraction.aaclip
    try:
        for batch in _batches(todo, batch_size):
            samples = [dataset.load(r) for r in batch]
            prompts = [build_prompt(object_name(s.category), extraction.state, extraction.prompt_template)
                       for s in samples]
            with torch.inference_mode():
                clip_images = clip_batch([s.image for s in samples], extraction.clip_size)
                embeddings = clip_branch.embed(models.clip, clip_images, extraction)
                scores = [clip_branch.zero_shot_scores(models.clip, {k: v[i:i + 1] for k, v in embeddings.items()},
                                                       s.category, extraction) for i, s in enumerate(samples)]
                aa = None if aaclip is None else aaclip_branch.arrays(aaclip, clip_images, [s.category for s in samples])
                images = diffusion_batch([s.image for s in samples], extraction.diffusion_size).to(device)
                with capture(models.pipe, attention=extraction.attention, features=list(extraction.features),
                             tokens=extraction.state_tokens, prompt=prompts) as cap:
                    mapdiff_forward(models.pipe, images, prompts, timesteps=extraction.timesteps,
                                    seed=extraction.noise_seed, mask=extraction.mask)
            for i, s in enumerate(samples):
                clip_scores, clip_arrays = scores[i]
                arrays = {k: v[i].to(torch.float16) for k, v in embeddings.items()}
                arrays.update(clip_arrays)
                if aa is not None:
                    arrays.update(aa[i])
                store.add(s.image_id, cap.cache.select_rows(i), clip=clip_scores, arrays=arrays,
                          metadata={"label": s.label, "category": s.category, "defect_type": s.defect_type,
                                    "split": s.split, "image_path": str(s.image_path),
                                    "mask_path": None if s.mask_path is None else str(s.mask_path),
                                    "prompt": prompts[i], "noise_seed": extraction.noise_seed})
                bar.update(1)
    finally:
        bar.close()
    return ExtractionReport(total=len(mine), already=len(mine) - len(todo), new=len(todo),
                            seconds=time.perf_counter() - start)
