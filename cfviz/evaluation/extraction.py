"""Stage 1 of an evaluation: run the models once per image and keep what they produce.

For every image (test images and the normal references that k-shot draws need) the capture
store gets one entry with:

* ``attn/<layer>`` — cross-attention of the [state] tokens at every timestep (M_diff_L's input);
* ``feat/<block>`` — UNet feature maps at every timestep (M_diff_V's input);
* ``clip_emb/...`` — CLIP image, patch and window embeddings (the k-shot visual maps' input);
* ``clip/...`` — zero-shot CLIP scores: PatchCLIP's and WinCLIP's language maps and window scores;
* ``aaclip/...`` — AA-CLIP maps and image score, when ``extraction.aaclip`` names adapters.

Everything later (k-shot memory banks, fusion, metrics, ablations) reads the store and never
re-runs a model. Entries are written atomically one image at a time.

Batches are a fixed function of the sorted image ids and the batch size
(:func:`plan_batches`: batch k holds images k*B .. k*B+B-1). CPU and GPU kernels give slightly
different numbers for an image depending on its batch, so every pass computes whole planned
batches: an interrupted run recomputes each batch that has a missing image (and writes only the
missing entries), and ``shard=(i, n)`` takes batches i, i+n, i+2n, ... (:func:`batches_for_shard`);
process i of n under ``accelerate launch`` is shard ``(i, n)`` (:mod:`cfviz.evaluation.distributed`).
Whichever way a run is cut, every entry is computed in the batch a single run would use, so the
store is byte-identical.

A run's plan (:func:`run_batches`) cuts each category's test images separately and computes each
k-shot reference alone, so an image's batch does not depend on which categories, shots or seeds
a run asks for either: runs that share a store (one category at a time, more seeds later,
notebooks) add the entries a single fresh run would write.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cfviz.capture.store import CaptureStore
from cfviz.evaluation.config import ExtractionConfig
from cfviz.evaluation.models import LoadedModels


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


def plan_batches(image_ids: Sequence[str], batch_size: int) -> list[list[str]]:
    """The batches of a run: the sorted ids cut into runs of ``batch_size`` (the last may be short).

    A single run, a resumed run, every shard and every accelerate process use this one plan, so an
    image is always computed with the same neighbours.

    >>> plan_batches(["c", "a", "e", "b", "d"], 2)
    [['a', 'b'], ['c', 'd'], ['e']]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ids = sorted(image_ids)
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if repeated:
        raise ValueError(f"image ids must be unique; repeated: {repeated[:5]}")
    return [ids[k:k + batch_size] for k in range(0, len(ids), batch_size)]


def batches_for_shard(batches: Sequence[Sequence[str]], i: int, n: int) -> list[list[str]]:
    """Batches ``i, i+n, i+2n, ...`` of a plan: shard ``i`` of ``n`` takes whole batches.

    >>> batches_for_shard([["a", "b"], ["c", "d"], ["e"]], 1, 2)
    [['c', 'd']]
    """
    if isinstance(i, bool) or isinstance(n, bool) or not (isinstance(i, int) and isinstance(n, int)
                                                          and n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {(i, n)!r}")
    return [list(b) for b in batches[i::n]]


def run_batches(records: Sequence[Any], batch_size: int, shard: tuple[int, int] | None = None) -> list[list[str]]:
    """The batches of a run (or of shard ``(i, n)`` of it), as image ids.

    Per category (sorted), its test images are cut by :func:`plan_batches`; then every other
    record (the k-shot references, drawn from the training images) is a batch of its own. Which
    test images a category has does not depend on the run's shots, seeds or other categories, and
    a batch of one has no neighbours, so every image is computed with the same neighbours by any
    run that includes it. (Cutting the references too would tie each one to the other references
    a run happens to draw; computing them alone costs little, they are a few per category.)

    >>> from types import SimpleNamespace as R
    >>> recs = [R(image_id=i, category=i.split("/")[0], split=i.split("/")[1])
    ...         for i in ["b/test/1", "a/test/2", "a/test/1", "a/train/7", "a/test/3"]]
    >>> run_batches(recs, 2)
    [['a/test/1', 'a/test/2'], ['a/test/3'], ['b/test/1'], ['a/train/7']]
    >>> run_batches(recs, 2, shard=(1, 2))
    [['a/test/3'], ['a/train/7']]
    """
    tests: dict[str, list[str]] = {}
    others: list[str] = []
    for r in records:
        if r.split == "test":
            tests.setdefault(str(r.category), []).append(r.image_id)
        else:
            others.append(r.image_id)
    plan = [b for c in sorted(tests) for b in plan_batches(tests[c], batch_size)]
    plan += [[i] for i in sorted(others)]
    ids = [i for b in plan for i in b]
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique across a run's records")
    return plan if shard is None else batches_for_shard(plan, *shard)


def relative_path(path: Any, root: Any) -> str | None:
    """``path`` relative to the data set root (POSIX form), so that entries name no machine's folders."""
    from pathlib import Path

    if path is None:
        return None
    p = Path(path)
    if root is not None:
        try:
            return p.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return p.as_posix()


def _tokens(extraction: ExtractionConfig, samples: Sequence[Any]) -> list[str]:
    """The words recorded for a batch (``extraction.language_tokens``); a planned batch is one category."""
    words = {tuple(extraction.tokens_for(s.category)) for s in samples}
    if len(words) != 1:
        raise ValueError(f"language_tokens={extraction.language_tokens!r} needs one category per batch, got "
                         f"{sorted({s.category for s in samples})}")
    return list(words.pop())


def extract(dataset: Any, records: Sequence[Any], models: LoadedModels, extraction: ExtractionConfig,
            store: CaptureStore, *, batch_size: int = 4, shard: tuple[int, int] | None = None,
            batches: Sequence[Sequence[str]] | None = None, progress: bool = True, prefetch: int = 1,
            batch_timesteps: bool | int | None = None) -> ExtractionReport:
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
        Images per model call; the batches are :func:`run_batches` of ``records``.
    shard:
        ``(i, n)``: process only batches i, i+n, ... of the plan (:func:`batches_for_shard`).
    batches:
        The batches to process, as a run's plan cut them (``RunPlan.batches``, this shard's);
        ``batch_size`` and ``shard`` are then not used.
    prefetch:
        Batches loaded and preprocessed ahead on a background thread while the models run
        (:class:`~cfviz.data.prefetch.Prefetcher`); ``0`` does it on the calling thread. The
        store is the same byte for byte either way, and a data error is raised when its batch's
        turn comes, after the entries of the batches before it are written.
    batch_timesteps:
        ``None`` (default): ``extraction.batch_timesteps``. ``False``: one UNet call per timestep. ``True``: every timestep (and noise draw)
        of a batch as rows of one UNet call; an int: at most that many rows per call
        (:mod:`cfviz.diffusion.batched`). Maps agree with the per-timestep calls to float
        tolerance, not bit for bit, so the entries say so in their capture settings and a store
        refuses to mix the two forms.

    A planned batch with any image missing from the store is computed whole; only its missing
    entries are written. The report counts the images of the batches this pass is responsible for.
    """
    import torch

    from cfviz.capture import capture
    from cfviz.capture.families import denoiser_device, prompt_tokenizer
    from cfviz.data.prefetch import Prefetcher
    from cfviz.data.transforms import clip_batch, diffusion_batch
    from cfviz.diffusion.batched import jobs_per_call, mapdiff_forward_batched, repeat_prompts
    from cfviz.diffusion.forward import build_prompt, mapdiff_forward
    from cfviz.evaluation import aaclip_branch, clip_branch
    from cfviz.evaluation.prompt_tokens import label_prompt_tokens, token_specs
    from cfviz.evaluation.store_check import image_fingerprint
    from cfviz.utils.progress import progress_bar

    if batch_timesteps is not None:  # in place of the store's setting, checked as the setting is
        extraction = dataclasses.replace(extraction, batch_timesteps=batch_timesteps)
    batch_timesteps = extraction.batch_timesteps
    max_rows = None if isinstance(batch_timesteps, bool) else batch_timesteps
    forward_mapdiff = (mapdiff_forward if batch_timesteps is False
                       else functools.partial(mapdiff_forward_batched, max_rows=max_rows))

    by_id = {r.image_id: r for r in records}
    mine = run_batches(list(by_id.values()), batch_size, shard) if batches is None else [list(b) for b in batches]
    todo_ids = set(store.missing([i for b in mine for i in b]))
    todo = [b for b in mine if todo_ids & set(b)]
    n_mine = sum(len(b) for b in mine)
    start = time.perf_counter()
    bar = progress_bar(total=len(todo_ids), desc="models", unit="img", disable=not progress)
    device = denoiser_device(models.pipe)  # .unet or .transformer: every family
    aaclip = aaclip_branch.load(models.clip, extraction) if todo else None  # None unless extraction.aaclip
    if aaclip is not None:  # the activation AA-CLIP runs the CLIP with: later runs must agree
        store.confirm("aaclip", aaclip_branch.identity(aaclip))
    clip_size = extraction.clip_size or int(models.clip.image_size)  # None: the model's own input size
    if clip_size != models.clip.image_size:
        from cfviz.errors import ConfigError

        raise ConfigError(f"{{extraction.clip_size}} is {clip_size} but {models.clip.name} takes "
                          f"{models.clip.image_size} px images; leave it unset", "extraction.clip_size")
    root = getattr(dataset, "root", None)

    def prepare(batch: list[str]) -> tuple[list[Any], list[str], Any, Any, list[str]]:
        """Pixels, prompts, both model inputs and the image fingerprints of a batch (on the prefetch thread)."""
        samples = [dataset.load(by_id[i]) for i in batch]
        prompts = [build_prompt(extraction.object_name(s.category), extraction.state, extraction.prompt_template)
                   for s in samples]
        images = [s.image for s in samples]
        # what each entry is valid for (store_check compares it before an entry is reused)
        fingerprints = [image_fingerprint(by_id[i].image_path) for i in batch]
        return (samples, prompts, clip_batch(images, clip_size), diffusion_batch(images, extraction.diffusion_size),
                fingerprints)

    prepared = Prefetcher(prepare, todo, depth=prefetch, name="cfviz-extract-prefetch")
    try:
        for samples, prompts, clip_images, diffusion_images, fingerprints in prepared:
            with torch.inference_mode():
                embeddings = clip_branch.embed(models.clip, clip_images, extraction)
                scores = [clip_branch.zero_shot_scores(models.clip, {k: v[i:i + 1] for k, v in embeddings.items()},
                                                       s.category, extraction) for i, s in enumerate(samples)]
                aa = None if aaclip is None else aaclip_branch.arrays(aaclip, clip_images, [s.category for s in samples],
                                                                  images=[s.image for s in samples])
                images = diffusion_images.to(device)
                words = _tokens(extraction, samples)  # tokens="all": then every prompt token (prompt_tokens.py)
                # batched timesteps: each UNet call holds `groups` copies of the batch, one prompt per row
                groups = 1 if batch_timesteps is False else jobs_per_call(
                    len(extraction.timesteps), extraction.noise_draws, len(samples), max_rows)
                with capture(models.pipe, attention=extraction.attention, features=list(extraction.features),
                             tokens=token_specs(prompt_tokenizer(models.pipe), prompts, words, extraction.tokens),
                             prompt=repeat_prompts(prompts, groups)) as cap:
                    forward_mapdiff(models.pipe, images, prompts, timesteps=extraction.timesteps,
                                    seed=extraction.noise_seed, mask=extraction.mask, noise=extraction.noise,
                                    image_ids=[s.image_id for s in samples], draws=extraction.noise_draws,
                                    capture=cap)
                if extraction.tokens == "all":
                    label_prompt_tokens(cap.cache, words, prompt_tokenizer(models.pipe))
                elif extraction.language_tokens != "state":
                    # the words differ per category (e.g. its name): the store's capture settings get
                    # one value for all categories; each entry keeps its own labels (M_diff_L reads those)
                    cap.cache.settings["tokens"] = [f"<{extraction.language_tokens} words of each category>"]
            for i, s in enumerate(samples):
                if s.image_id not in todo_ids:  # computed only to keep the batch whole
                    continue
                clip_scores, clip_arrays = scores[i]
                arrays = {k: v[i].to(torch.float16) for k, v in embeddings.items()}
                arrays.update(clip_arrays)
                if aa is not None:
                    arrays.update(aa[i])
                store.add(s.image_id, cap.cache.select_rows(i), clip=clip_scores, arrays=arrays,
                          inputs={"image": fingerprints[i]},
                          metadata={"label": s.label, "category": s.category, "defect_type": s.defect_type,
                                    "split": s.split, "image_path": relative_path(s.image_path, root),
                                    "mask_path": relative_path(s.mask_path, root),
                                    "prompt": prompts[i], "noise_seed": extraction.noise_seed,
                                    # noise settings other than the default (earlier entries stay as they were)
                                    **({"noise": extraction.noise} if extraction.noise != "shared" else {}),
                                    **({"noise_draws": extraction.noise_draws} if extraction.noise_draws != 1
                                       else {})})
                bar.update(1)
    finally:
        prepared.close()  # on an error or KeyboardInterrupt too: the prefetch thread stops
        bar.close()
    return ExtractionReport(total=n_mine, already=n_mine - len(todo_ids), new=len(todo_ids),
                            seconds=time.perf_counter() - start)
