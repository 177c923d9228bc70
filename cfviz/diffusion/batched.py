"""MapDiff with its timesteps batched: one UNet call of ``B*T`` rows instead of ``T`` calls of ``B``.

:func:`mapdiff_forward_batched` gives the UNet the noised latents of every (timestep, draw) of a
batch of images as rows of one call (or of a few equal calls, ``max_rows``), each row with its
own timestep, and :func:`split_steps` then relabels the capture: a call that held ``n`` groups
of ``B`` rows becomes ``n`` steps of ``B`` rows, each with its timestep, exactly the steps,
row labels and shapes that :func:`~cfviz.diffusion.forward.mapdiff_forward` records with one
call per timestep (draws are then averaged per timestep as there).

The inputs of each row are bit-identical to the per-timestep path (same noise, same
``add_noise``); the UNet's kernels give batch-dependent last bits, so maps agree to float
tolerance, not bit for bit. **A store written with batched timesteps is therefore another store**:
the capture settings of its entries say ``"timesteps_batched": true`` and a store refuses to mix
them with entries recorded one call per timestep (:class:`~cfviz.errors.StoreMismatchError`).

Whether it pays: on a CPU the UNet's cost grows with its rows, so batching saves only per-call
overhead (``benchmarks/results/timestep_batching.md``); on a GPU a batch-1 512 px call leaves the
device partly idle, which batching fills.

The capture must be told the prompt of every row: pass ``prompt=repeat_prompts(prompts, n)``
with ``n = jobs_per_call(...)`` (the prompts of one call, one per row).

Example
-------
>>> import torch, cfviz
>>> from cfviz.models import tiny_inpaint_pipeline
>>> pipe = tiny_inpaint_pipeline(seed=0)
>>> images = torch.zeros(2, 3, 64, 64)
>>> prompts = ["a photo of a bottle with damage"] * 2
>>> n = jobs_per_call(timesteps=3, draws=1, batch=2)
>>> with cfviz.capture(pipe, tokens=["damage"], prompt=repeat_prompts(prompts, n)) as cap:
...     _ = mapdiff_forward_batched(pipe, images, prompts, timesteps=[100, 261, 400], capture=cap)
>>> cap.cache.timesteps, cap.cache.batch_size, cap.cache.settings["timesteps_batched"]
([100.0, 261.0, 400.0], 2, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cfviz.errors import CaptureError, CfvizError

#: The capture setting that marks entries recorded with batched timesteps (part of a store's identity).
SETTING = "timesteps_batched"


def jobs_per_call(timesteps: int, draws: int, batch: int, max_rows: int | None = None) -> int:
    """(timestep, draw) pairs per UNet call: all of them, or the most that fit ``max_rows`` rows
    while every call gets the same number (so every call has the same rows, as the capture needs).

    >>> jobs_per_call(3, 1, 2), jobs_per_call(3, 1, 2, max_rows=4), jobs_per_call(4, 1, 1, max_rows=3)
    (3, 1, 2)
    """
    jobs = int(timesteps) * int(draws)
    if max_rows is None:
        return jobs
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise CfvizError(f"max_rows must be None (one call) or an int >= 1 (UNet rows per call), got {max_rows!r}")
    fit = max(1, max_rows // int(batch))
    return max(n for n in range(1, jobs + 1) if jobs % n == 0 and n <= fit)


def repeat_prompts(prompts: str | Sequence[str], n: int) -> str | list[str]:
    """The capture's ``prompt=`` for calls of ``n`` row groups: one prompt stays one, a list repeats."""
    return prompts if isinstance(prompts, str) else list(prompts) * int(n)


def mapdiff_forward_batched(pipe: Any, images: Any, prompts: str | Sequence[str], *,
                            timesteps: Sequence[int], seed: int = 0, mask: Any = None, noise: str = "shared",
                            image_ids: Sequence[str] | None = None, draws: int = 1, capture: Any = None,
                            max_rows: int | None = None) -> list[Any]:
    """:func:`~cfviz.diffusion.forward.mapdiff_forward` with the timesteps (and draws) in fewer UNet calls.

    Same arguments and result (one noise prediction per timestep, the mean over draws), for
    SD2-style inpainting UNets. ``max_rows`` caps the rows of one call (memory); the
    ``(timestep, draw)`` pairs are cut into equal calls (:func:`jobs_per_call`). With
    ``capture`` (the active capture around this call, given ``prompt=repeat_prompts(prompts, n)``)
    the records are relabelled to one step per timestep (:func:`split_steps`, then draws averaged).
    """
    import torch

    from cfviz.capture.families import detect_family
    from cfviz.capture.session import classifier_free_guidance
    from cfviz.diffusion.forward import average_draws, check_noise, inpaint_conditioning, unet_input

    check_noise(noise, draws)
    family = detect_family(pipe)
    if family.name != "cross" and not (family.name == "sd" and family.inpainting):
        raise CfvizError(f"batched timesteps are implemented for SD2-style inpainting UNets, not this {family.name} "
                         "model; use cfviz.diffusion.forward.mapdiff_forward")
    b = images.shape[0]
    unet = pipe.unet
    inputs, emb, keys = inpaint_conditioning(pipe, images, prompts, timesteps=timesteps, mask=mask, noise=noise,
                                             image_ids=image_ids)
    jobs = [(int(t), d) for t in timesteps for d in range(draws)]  # the per-timestep path's call order
    per_call = jobs_per_call(len(timesteps), draws, b, max_rows)
    preds: list[Any] = []
    with torch.no_grad(), classifier_free_guidance(False):
        for start in range(0, len(jobs), per_call):
            chunk = jobs[start:start + per_call]
            xs = [unet_input(pipe, inputs, seed, t, d, keys) for t, d in chunk]  # as mapdiff_forward builds them
            t_rows = torch.tensor([t for t, _ in chunk], device=unet.device).repeat_interleave(b)
            out = unet(torch.cat(xs), t_rows, encoder_hidden_states=emb.repeat(len(chunk), 1, 1)).sample
            preds.extend(out.split(b))
    outputs = [torch.stack(preds[k * draws:(k + 1) * draws]).mean(0) if draws > 1 else preds[k]
               for k in range(len(timesteps))]
    if capture is not None:
        split_steps(capture.cache, b)
        average_draws(capture.cache, draws)
    return outputs


def split_steps(cache: Any, rows: int) -> Any:
    """Relabel a capture whose calls held several row groups: each group of ``rows`` rows becomes a step.

    A call of ``n * rows`` rows (timesteps ``[t1]*rows + [t2]*rows + ...``) becomes ``n`` steps in
    order, each labelled with its group's timestep, ``rows`` rows and batch size ``rows`` (what a
    call per timestep records); the prompts of the token selection are cut to one group's.
    Marks the cache's settings with ``"timesteps_batched": True`` (in place; returns the cache).
    """
    steps, tables = [], {"attention": {}, "features": {}}
    for info in cache.steps:
        if info.batch_size % rows or tuple(info.rows) != tuple(range(info.batch_size)):
            raise CaptureError(f"step {info.step} kept rows {list(info.rows)} of {info.batch_size}: a batched-timestep "
                               f"call must keep every row, in whole groups of {rows}")
        values = info.timestep if isinstance(info.timestep, list) else [info.timestep] * info.batch_size
        for g in range(info.batch_size // rows):
            group = values[g * rows:(g + 1) * rows]
            if len(set(group)) != 1:
                raise CaptureError(f"step {info.step}: rows {g * rows}..{g * rows + rows - 1} have different "
                                   f"timesteps {group}")
            new = len(steps)
            steps.append(replace(info, step=new, timestep=group[0], rows=tuple(range(rows)), batch_size=rows))
            for kind, table in (("attention", cache.attention), ("features", cache.features)):
                for name, per in table.items():
                    if info.step in per:
                        tables[kind].setdefault(name, {})[new] = per[info.step][g * rows:(g + 1) * rows].clone()
    cache.steps = steps
    cache.attention = {n: tables["attention"].get(n, {}) for n in cache.attention}
    cache.features = {n: tables["features"].get(n, {}) for n in cache.features}
    tokens = cache.tokens
    if tokens is not None and len(tokens.prompts) > rows:
        if len(tokens.prompts) % rows or any(tokens.prompts[i] != tokens.prompts[i % rows]
                                             for i in range(len(tokens.prompts))):
            raise CaptureError("the capture's prompts are not one group's prompts repeated: pass "
                               "prompt=repeat_prompts(prompts, n) to the capture")
        cache.tokens = replace(tokens, prompts=tokens.prompts[:rows], token_ids=tokens.token_ids[:rows],
                               columns=tokens.columns[:rows])
    cache.settings[SETTING] = True
    return cache
