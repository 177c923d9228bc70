"""The MapDiff forward pass: encode a real image, noise it at chosen timesteps, run the UNet once each.

No sampling loop is needed: for every timestep ``t`` the inpainting UNet gets
``[z_t, mask, masked-image latents]`` (9 channels) and the prompt
``"a close-up cropped png photo of a [object] with [state]"``; a :func:`cfviz.capture` around the
call records its cross-attention and feature maps.

By default nothing is masked (an all-zero inpainting mask), so the whole image is context.
Noise for timestep ``t`` comes from a generator seeded by ``(seed, t)``, so a run over several
timesteps gives exactly the records of separate single-timestep runs, and an image's result does
not depend on which other images share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cfviz.errors import CfvizError

PROMPT_TEMPLATE = "a close-up cropped png photo of a {object} with {state}"

#: Default noise levels (of 1000 training steps). Our choice, not the paper's (which does not say):
#: a low, a middle (DIFT's t=261 for SD2 features, Tang et al. 2023) and a higher level.
DEFAULT_TIMESTEPS: tuple[int, ...] = (100, 261, 400)


def build_prompt(object_name: str, state: str, template: str = PROMPT_TEMPLATE) -> str:
    """Fill the MapDiff prompt template.

    >>> build_prompt("metal nut", "damage")
    'a close-up cropped png photo of a metal nut with damage'
    """
    return template.format(object=object_name.replace("_", " "), state=state)


def noise_seed(seed: int, timestep: int) -> int:
    """The generator seed for the noise at ``timestep`` (independent of the other timesteps).

    >>> noise_seed(0, 261) == noise_seed(0, 261) != noise_seed(1, 261)
    True
    """
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(timestep)]).generate_state(1)[0])


@dataclass
class InpaintInputs:
    """The conditioning latents of the inpainting UNet for a batch of images."""

    latents: Any  #: (B, 4, h, w) clean image latents, already times the VAE scaling factor
    mask: Any  #: (B, 1, h, w) inpainting mask at latent resolution (1 = to be inpainted)
    masked_image_latents: Any  #: (B, 4, h, w) latents of the image with the masked region blanked


def _vae_encode(pipe: Any, images: Any) -> Any:
    vae = pipe.vae
    dist = vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist
    return dist.mean * float(vae.config.scaling_factor)  # the mean: deterministic latents


def inpaint_inputs(pipe: Any, images: Any, mask: Any = None) -> InpaintInputs:
    """VAE-encode images (``(B, 3, H, W)`` in [-1, 1]) and build the inpainting conditioning.

    Parameters
    ----------
    mask:
        ``None`` or ``"none"``: nothing masked (default; the whole image is context).
        ``"full"``: everything masked. A tensor ``(B or 1, 1, H, W)`` with 1 where the model should
        inpaint (diffusers' convention).
    """
    import torch
    import torch.nn.functional as F

    if images.ndim != 4 or images.shape[1] != 3:
        raise CfvizError(f"images must be (batch, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    if mask is None or (isinstance(mask, str) and mask == "none"):
        pixel_mask = torch.zeros(b, 1, h, w, device=images.device, dtype=images.dtype)
    elif isinstance(mask, str) and mask == "full":
        pixel_mask = torch.ones(b, 1, h, w, device=images.device, dtype=images.dtype)
    elif isinstance(mask, str):
        raise CfvizError(f"mask must be None, 'none', 'full' or a tensor, got {mask!r}")
    else:
        pixel_mask = torch.as_tensor(mask, device=images.device, dtype=images.dtype)
        if pixel_mask.ndim == 3:
            pixel_mask = pixel_mask[:, None]
        if pixel_mask.shape[-2:] != (h, w) or pixel_mask.shape[1] != 1:
            raise CfvizError(f"mask must be (B, 1, {h}, {w}), got {tuple(pixel_mask.shape)}")
        pixel_mask = (pixel_mask >= 0.5).to(images.dtype).expand(b, -1, -1, -1)
    with torch.no_grad():
        latents = _vae_encode(pipe, images)
        nothing_masked = not bool(pixel_mask.any())
        # with nothing masked the masked image is the image: skip the second VAE pass
        masked = latents if nothing_masked else _vae_encode(pipe, images * (pixel_mask < 0.5))
    lat_mask = F.interpolate(pixel_mask.float(), size=latents.shape[-2:]).to(latents.dtype)
    return InpaintInputs(latents=latents, mask=lat_mask.to(latents.device), masked_image_latents=masked)


def encode_prompts(pipe: Any, prompts: Sequence[str]) -> Any:
    """Text-encoder hidden states ``(B, L, D)`` for the prompts (no classifier-free guidance)."""
    import torch

    tok = pipe.tokenizer
    ids = tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    enc = pipe.text_encoder
    with torch.no_grad():
        return enc(ids.to(enc.device))[0]


def mapdiff_forward(pipe: Any, images: Any, prompts: str | Sequence[str], *,
                    timesteps: Sequence[int] = DEFAULT_TIMESTEPS, seed: int = 0, mask: Any = None) -> list[Any]:
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

    family = detect_family(pipe)
    # other known families have their own inputs; SD2-style inpainting (and unknown UNet-likes) stay here
    if family.name != "cross" and not (family.name == "sd" and family.inpainting):
        from cfviz.diffusion.families import family_forward

        return family_forward(pipe, images, prompts, timesteps=timesteps, seed=seed, mask=mask)
    b = images.shape[0]
    prompt_list = [prompts] * b if isinstance(prompts, str) else list(prompts)
    if len(prompt_list) != b:
        raise CfvizError(f"{len(prompt_list)} prompts for {b} images: pass one prompt or one per image")
    n_train = int(pipe.scheduler.config.num_train_timesteps)
    bad = [t for t in timesteps if not 0 <= int(t) < n_train]
    if bad:
        raise CfvizError(f"timesteps {bad} are outside [0, {n_train}) of the scheduler")
    unet = pipe.unet
    inputs = inpaint_inputs(pipe, images, mask)
    emb = encode_prompts(pipe, prompt_list).to(dtype=unet.dtype)
    outputs = []
    # these UNet calls are unguided whatever the pipeline's last pipe() call did: say so, so that a
    # capture with rows="auto" keeps every image (see cfviz.capture.session.classifier_free_guidance)
    with torch.no_grad(), classifier_free_guidance(False):
        for t in timesteps:
            gen = torch.Generator("cpu").manual_seed(noise_seed(seed, int(t)))
            noise = torch.randn(inputs.latents.shape[1:], generator=gen, dtype=torch.float32)
            noise = noise.expand_as(inputs.latents).to(inputs.latents)
            t_tensor = torch.tensor([int(t)], device=inputs.latents.device)
            noisy = pipe.scheduler.add_noise(inputs.latents, noise, t_tensor)
            x = torch.cat([noisy, inputs.mask, inputs.masked_image_latents], dim=1).to(unet.dtype)
            outputs.append(unet(x, t_tensor.to(unet.device), encoder_hidden_states=emb).sample)
    return outputs
