"""The MapDiff forward pass: encode a real image, noise it at chosen timesteps, run the UNet once each.

No sampling loop is needed: for every timestep ``t`` the inpainting UNet gets
``[z_t, mask, masked-image latents]`` (9 channels) and the prompt
``"a close-up cropped png photo of a [object] with [state]"``; a :func:`cfviz.capture` around the
call records its cross-attention and feature maps.

By default nothing is masked (an all-zero inpainting mask), so the whole image is context.
Noise for timestep ``t`` comes from a generator seeded by ``(seed, t)``, so a run over several
timesteps gives exactly the records of separate single-timestep runs, and an image's result does
not depend on which other images share its batch.

Noise knobs (ours; the paper says neither): ``noise="shared"`` (default) gives every image the
same draw at ``t``; ``noise="per-image"`` seeds it by ``(seed, t, image id)``, so each image has
its own draw and still none depends on its batch or shard. ``draws=N`` runs N draws per
timestep (N UNet calls) and averages their records per timestep (:func:`average_draws`), so a
store keeps one step per timestep whatever N is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cfviz.diffusion.inputs import InpaintInputs, draw_noise, encode_prompts, inpaint_inputs, noise_seed  # noqa: F401
from cfviz.errors import CfvizError

PROMPT_TEMPLATE = "a close-up cropped png photo of a {object} with {state}"

#: Default noise levels (of 1000 training steps). Our choice, not the paper's (which does not say):
#: a low, a middle (DIFT's t=261 for SD2 features, Tang et al. 2023) and a higher level.
DEFAULT_TIMESTEPS: tuple[int, ...] = (100, 261, 400)
#: How the noise at a timestep is drawn: one draw for every image, or one per image (by its id).
NOISE_MODES: tuple[str, ...] = ("shared", "per-image")


def state_phrase(state: str) -> str:
    """The [state] text of the prompt: a comma-separated ensemble is written as a list.

    ``"damage"`` and ``"crack damage"`` stay as they are; ``"damage,defect, scratch"`` becomes
    ``"damage, defect, scratch"`` (one prompt holds every state of the ensemble; see
    :func:`cfviz.diffusion.mapdiff.state_groups` for how M_diff_L weighs them).

    >>> state_phrase("damage,defect, scratch"), state_phrase("crack damage")
    ('damage, defect, scratch', 'crack damage')
    """
    if "," not in state:
        return state
    return ", ".join(part.strip() for part in state.split(",") if part.strip())


def build_prompt(object_name: str, state: str, template: str = PROMPT_TEMPLATE) -> str:
    """Fill the MapDiff prompt template.

    >>> build_prompt("metal nut", "damage")
    'a close-up cropped png photo of a metal nut with damage'
    >>> build_prompt("bottle", "damage,scratch")
    'a close-up cropped png photo of a bottle with damage, scratch'
    """
    return template.format(object=object_name.replace("_", " "), state=state_phrase(state))


def average_draws(cache: Any, draws: int) -> Any:
    """Average each run of ``draws`` consecutive steps of a capture into one step (in place).

    :func:`mapdiff_forward` makes the ``draws`` UNet calls of one timestep one after another, so
    steps ``k*draws .. k*draws+draws-1`` share a timestep. Attention and feature maps are averaged
    in float32 and stored in their recorded dtype; the step keeps the first call's information,
    renumbered ``k``. ``draws=1`` leaves the cache untouched (byte for byte).
    """
    import torch

    if draws == 1:
        return cache
    steps = list(cache.steps)
    if len(steps) % draws:
        raise CfvizError(f"{len(steps)} recorded steps are not whole groups of {draws} noise draws")
    groups = [steps[i:i + draws] for i in range(0, len(steps), draws)]
    for group in groups:
        if len({str(s.timestep) for s in group}) != 1:
            raise CfvizError(f"noise draws of one group have different timesteps: {[s.timestep for s in group]}")
    for table in (cache.attention, cache.features):
        for name, per in table.items():
            merged = {}
            for k, group in enumerate(groups):
                parts = [per[s.step] for s in group if s.step in per]
                if not parts:
                    continue
                merged[k] = (torch.stack([p.float() for p in parts]).mean(0)).to(parts[0].dtype)
            table[name] = merged
    cache.steps = [replace(group[0], step=k) for k, group in enumerate(groups)]
    return cache


def check_noise(noise: str, draws: int) -> None:
    """``noise`` is a known mode and ``draws`` a positive integer (the noise arguments of the MapDiff forwards)."""
    if noise not in NOISE_MODES:
        raise CfvizError(f"noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise CfvizError(f"draws must be an integer >= 1 (noise draws averaged per timestep), got {draws!r}")


def inpaint_conditioning(pipe: Any, images: Any, prompts: str | Sequence[str], *, timesteps: Sequence[int],
                         mask: Any, noise: str, image_ids: Sequence[str] | None
                         ) -> tuple[InpaintInputs, Any, list[str] | None]:
    """What every UNet call of an SD2-style MapDiff forward shares, after checking the arguments.

    Returns the inpainting inputs, the prompt embeddings (in the UNet's dtype) and the per-image
    noise keys (``None`` for shared noise). Used by :func:`mapdiff_forward` and
    :func:`cfviz.diffusion.batched.mapdiff_forward_batched`.
    """
    b = images.shape[0]
    keys = None
    if noise == "per-image":
        if image_ids is None or len(list(image_ids)) != b:
            raise CfvizError(f"noise='per-image' needs image_ids, one id per image ({b}), got "
                             f"{None if image_ids is None else len(list(image_ids))}")
        keys = [str(i) for i in image_ids]
    prompt_list = [prompts] * b if isinstance(prompts, str) else list(prompts)
    if len(prompt_list) != b:
        raise CfvizError(f"{len(prompt_list)} prompts for {b} images: pass one prompt or one per image")
    n_train = int(pipe.scheduler.config.num_train_timesteps)
    bad = [t for t in timesteps if not 0 <= int(t) < n_train]
    if bad:
        raise CfvizError(f"timesteps {bad} are outside [0, {n_train}) of the scheduler")
    inputs = inpaint_inputs(pipe, images, mask)
    return inputs, encode_prompts(pipe, prompt_list).to(dtype=pipe.unet.dtype), keys


def unet_input(pipe: Any, inputs: InpaintInputs, seed: int, timestep: int, draw: int, keys: list[str] | None) -> Any:
    """The 9-channel UNet input of one (timestep, draw): noised latents, mask, masked-image latents."""
    import torch

    t_tensor = torch.tensor([int(timestep)], device=inputs.latents.device)
    eps = draw_noise(inputs.latents.shape, seed, int(timestep), draw=draw, keys=keys).to(inputs.latents)
    noisy = pipe.scheduler.add_noise(inputs.latents, eps, t_tensor)
    return torch.cat([noisy, inputs.mask, inputs.masked_image_latents], dim=1).to(pipe.unet.dtype)


def mapdiff_forward(pipe: Any, images: Any, prompts: str | Sequence[str], *,
                    timesteps: Sequence[int] = DEFAULT_TIMESTEPS, seed: int = 0, mask: Any = None,
                    noise: str = "shared", image_ids: Sequence[str] | None = None, draws: int = 1,
                    capture: Any = None) -> list[Any]:
    """Run one UNet call per timestep on noised latents of real images; return the noise predictions.

    Wrap the call in :func:`cfviz.capture` to record maps; each UNet call is one capture step,
    labelled with its timestep. The calls are declared unguided, so ``rows="auto"`` keeps every
    image even after a guided ``pipe()`` call on the same pipeline.

    Every other supported family (SD 1.x/2.x text-to-image, SDXL and its inpainting variant,
    SD3, FLUX and FLUX Fill, PixArt) is handed to :func:`cfviz.diffusion.families.family_forward`
    with the same arguments: ``timesteps`` are on the same 0..1000 scale (flow-matching models:
    ``sigma = t / 1000``), and ``mask`` goes where the model takes inpainting inputs.

    Parameters
    ----------
    pipe:
        A diffusers ``StableDiffusionInpaintPipeline`` (or any object with vae, unet, tokenizer,
        text_encoder and scheduler whose UNet takes 9 channels), or a pipeline of another family.
    images:
        ``(B, 3, H, W)`` in [-1, 1] (see :func:`cfviz.data.transforms.diffusion_transform`).
    prompts:
        One prompt for all images or one per image (see :func:`build_prompt`).
    timesteps:
        Noise levels in ``[0, num_train_timesteps)``; one UNet call each, in this order.
    seed:
        Seeds the noise (see :func:`noise_seed`).
    mask:
        Inpainting mask, see :func:`inpaint_inputs`.
    noise, image_ids:
        ``"shared"`` (default): one noise draw for every image at a timestep; ``"per-image"``:
        each image's own draw, seeded by ``(seed, t, its id)`` from ``image_ids`` (one per image),
        so it does not depend on the batch (see :func:`draw_noise`).
    draws:
        Noise draws averaged per timestep (default 1): ``draws`` UNet calls per timestep, one
        after another; the noise predictions returned are their mean. With ``capture`` (the
        active :func:`cfviz.capture` around this call) the records of each timestep's draws are
        averaged into one step (:func:`average_draws`); without it they stay separate steps.

    Example
    -------
    >>> import torch, cfviz
    >>> from cfviz.models import tiny_inpaint_pipeline
    >>> pipe = tiny_inpaint_pipeline(seed=0)
    >>> images = torch.zeros(1, 3, 64, 64)
    >>> prompt = build_prompt("bottle", "damage")
    >>> with cfviz.capture(pipe, tokens=["damage"], prompt=prompt) as cap:
    ...     _ = mapdiff_forward(pipe, images, prompt, timesteps=[100, 500])
    >>> cap.cache.timesteps
    [100.0, 500.0]
    """
    import torch

    from cfviz.capture.families import detect_family
    from cfviz.capture.session import classifier_free_guidance

    check_noise(noise, draws)
    family = detect_family(pipe)
    # other known families have their own inputs; SD2-style inpainting (and unknown UNet-likes) stay here
    if family.name != "cross" and not (family.name == "sd" and family.inpainting):
        if noise != "shared" or draws != 1:
            raise CfvizError(f"noise={noise!r}, draws={draws}: per-image noise and several draws are implemented "
                             f"for SD2-style inpainting UNets only, not this {family.name} model; use "
                             "noise='shared', draws=1")
        from cfviz.diffusion.families import family_forward

        return family_forward(pipe, images, prompts, timesteps=timesteps, seed=seed, mask=mask)
    unet = pipe.unet
    inputs, emb, keys = inpaint_conditioning(pipe, images, prompts, timesteps=timesteps, mask=mask, noise=noise,
                                             image_ids=image_ids)
    outputs = []
    # these UNet calls are unguided whatever the pipeline's last pipe() call did: say so, so that a
    # capture with rows="auto" keeps every image (see cfviz.capture.session.classifier_free_guidance)
    with torch.no_grad(), classifier_free_guidance(False):
        for t in timesteps:
            t_tensor = torch.tensor([int(t)], device=inputs.latents.device)
            preds = []
            for d in range(draws):  # the draws of one timestep are consecutive steps (average_draws)
                x = unet_input(pipe, inputs, seed, int(t), d, keys)
                preds.append(unet(x, t_tensor.to(unet.device), encoder_hidden_states=emb).sample)
            outputs.append(preds[0] if draws == 1 else torch.stack(preds).mean(0))
    if capture is not None:
        average_draws(capture.cache, draws)
    return outputs
