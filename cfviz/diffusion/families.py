"""The real-image forward of every denoiser family: encode, noise at chosen levels, one call each.

:func:`family_forward` is :func:`cfviz.diffusion.forward.mapdiff_forward` for SD 1.x/2.x (plain),
SDXL (plain and inpainting), SD3, FLUX (plain and Fill) and PixArt pipelines; ``mapdiff_forward``
hands every pipeline but SD 1.x/2.x inpainting to it, so one call serves all families.

Noise levels are ``timesteps`` on the 0..1000 training scale for every family:

* DDPM-trained families (SD, SDXL, PixArt): ``z_t = scheduler.add_noise(z_0, noise, t)``;
* flow-matching families (SD3, FLUX): ``sigma = t / 1000`` and ``z_sigma = (1 - sigma) z_0 +
  sigma * noise`` (the rectified-flow interpolation both pipelines sample along), so ``t = 261``
  means the same fraction of the way to noise in both kinds. The denoiser gets what its pipeline
  passes: SD3 ``sigma * 1000``, FLUX ``sigma``. No resolution shift is applied: the level is
  chosen, not scheduled.

Inpainting inputs go where the model takes them (SD/SDXL 9-channel UNets: ``[z_t, mask,
masked-image latents]``; FLUX Fill: packed ``[z, masked-image latents, 8x8-packed mask]``);
``mask`` is refused for models without them. Noise for level ``t`` comes from a generator seeded
by ``(seed, t)`` (:func:`cfviz.diffusion.inputs.noise_seed`), as in ``mapdiff_forward``. The calls
are declared unguided (``rows="auto"`` keeps every image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cfviz.diffusion.inputs import draw_noise, encode_prompts, inpaint_inputs, pixel_mask, vae_latents
from cfviz.errors import CfvizError

#: Families whose denoiser is trained with flow matching (noise level = sigma = t / 1000).
FLOW_FAMILIES = ("sd3", "flux")


def _pack(x: Any) -> Any:
    """FLUX's 2x2 packing: ``(B, C, h, w)`` -> ``(B, h/2 * w/2, 4C)``."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def _encode_text(pipe: Any, family: str, prompts: list[str], device: Any, max_sequence_length: int | None) -> dict:
    """The denoiser's text keyword arguments from the pipeline's own ``encode_prompt`` (no guidance)."""
    msl = {} if max_sequence_length is None else {"max_sequence_length": int(max_sequence_length)}
    if family in ("sd", "cross"):
        return {"encoder_hidden_states": encode_prompts(pipe, prompts)}
    if family == "sdxl":
        emb, _, pooled, _ = pipe.encode_prompt(prompts, device=device, num_images_per_prompt=1,
                                               do_classifier_free_guidance=False)
        return {"encoder_hidden_states": emb, "_pooled": pooled}
    if family == "sd3":
        emb, _, pooled, _ = pipe.encode_prompt(prompts, None, None, device=device, num_images_per_prompt=1,
                                               do_classifier_free_guidance=False, **msl)
        return {"encoder_hidden_states": emb, "pooled_projections": pooled}
    if family == "flux":
        emb, pooled, text_ids = pipe.encode_prompt(prompts, None, device=device, num_images_per_prompt=1, **msl)
        return {"encoder_hidden_states": emb, "pooled_projections": pooled, "txt_ids": text_ids}
    if family == "pixart":
        emb, attn_mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=device,
                                                  num_images_per_prompt=1, clean_caption=False, **msl)
        return {"encoder_hidden_states": emb, "encoder_attention_mask": attn_mask}
    raise CfvizError(f"no real-image forward for denoiser family {family!r}")  # pragma: no cover


def family_forward(pipe: Any, images: Any, prompts: str | Sequence[str], *, timesteps: Sequence[float],
                   seed: int = 0, mask: Any = None, max_sequence_length: int | None = None,
                   guidance: float = 3.5) -> list[Any]:
    """One denoiser call per noise level on real images, for any supported family.

    Parameters
    ----------
    pipe:
        A diffusers pipeline of a supported family (see :mod:`cfviz.capture.families`).
    images:
        ``(B, 3, H, W)`` in [-1, 1]; ``H``, ``W`` multiples of 16 (FLUX packs 2x2 latents).
    prompts:
        One prompt for all images or one per image.
    timesteps:
        Noise levels on the 0..1000 scale (flow matching: ``sigma = t / 1000``); one call each.
    seed:
        Seeds the noise, per level.
    mask:
        Inpainting mask for models that take one (``None``, ``"none"``, ``"full"`` or a tensor).
    max_sequence_length:
        T5 length for SD3/FLUX/PixArt (default: the pipeline's).
    guidance:
        FLUX-dev's distilled guidance value (models with ``guidance_embeds`` only).

    Returns the denoiser outputs (``.sample``), one per level.

    Example
    -------
    >>> import torch, cfviz
    >>> from cfviz.models.families import tiny_family_pipeline
    >>> pipe = tiny_family_pipeline("flux")
    >>> with cfviz.capture(pipe, tokens=["damage"], prompt="a photo with damage") as cap:
    ...     _ = family_forward(pipe, torch.zeros(1, 3, 64, 64), "a photo with damage", timesteps=[261])
    >>> cap.cache.timesteps, cap.cache.tokens.streams
    ([261.0], (('t5',),))
    """
    import torch

    from cfviz.capture.families import detect_family
    from cfviz.capture.session import classifier_free_guidance

    fam = detect_family(pipe)
    family = fam.name
    if images.ndim != 4 or images.shape[1] != 3:
        raise CfvizError(f"images must be (batch, 3, H, W) in [-1, 1], got shape {tuple(images.shape)}")
    b = images.shape[0]
    prompt_list = [prompts] * b if isinstance(prompts, str) else list(prompts)
    if len(prompt_list) != b:
        raise CfvizError(f"{len(prompt_list)} prompts for {b} images: pass one prompt or one per image")
    bad = [t for t in timesteps if not 0 <= float(t) < 1000]
    if bad:
        raise CfvizError(f"timesteps {bad} are outside [0, 1000) (flow-matching families use sigma = t / 1000)")
    if isinstance(mask, str) and mask == "none" and not fam.inpainting:
        mask = None  # "no inpainting region" is what a model without inpainting inputs does anyway
    if mask is not None and not fam.inpainting:
        raise CfvizError(f"mask=...: this {family} denoiser takes no inpainting inputs; pass mask=None, or use "
                         "an inpainting model (SD/SDXL inpainting UNet, FLUX Fill)")
    den = pipe.unet if family in ("sd", "sdxl", "cross") else pipe.transformer
    device = den.device
    with torch.no_grad():
        latents = vae_latents(pipe, images)
        text = _encode_text(pipe, family, prompt_list, device, max_sequence_length)
        extra = _conditioning(pipe, fam, images, latents, text, mask, guidance)
    outputs = []
    with torch.no_grad(), classifier_free_guidance(False):
        for t in timesteps:
            noise = draw_noise(latents.shape, seed, int(round(float(t)))).to(latents)  # shared by every image
            if family in FLOW_FAMILIES:
                sigma = float(t) / 1000.0
                noisy = (1.0 - sigma) * latents + sigma * noise
                t_arg = torch.full((b,), sigma * 1000.0 if family == "sd3" else sigma, device=device)
            else:
                t_tensor = torch.tensor([int(t)], device=latents.device)
                noisy = pipe.scheduler.add_noise(latents, noise, t_tensor)
                # PixArt's adaLN-single needs one timestep per row; UNets broadcast one
                t_arg = (t_tensor.expand(b) if family == "pixart" else t_tensor).to(device)
            outputs.append(_call(den, family, noisy, t_arg, extra).sample)
    return outputs


def _conditioning(pipe: Any, fam: Any, images: Any, latents: Any, text: dict, mask: Any, guidance: float) -> dict:
    """Everything but the noisy latents and the timestep, in the denoiser's keywords."""
    import torch

    family, b = fam.name, latents.shape[0]
    kw = {k: v for k, v in text.items() if not k.startswith("_")}
    if fam.inpainting and family in ("sd", "sdxl"):
        inp = inpaint_inputs(pipe, images, mask)
        kw["_inpaint"] = (inp.mask, inp.masked_image_latents)
    if family == "sdxl":
        h, w = images.shape[-2:]
        ids = [h, w, 0, 0] + ([6.0] if getattr(pipe.config, "requires_aesthetics_score", False) else [h, w])
        kw["added_cond_kwargs"] = {"text_embeds": text["_pooled"],
                                   "time_ids": torch.tensor([ids] * b, dtype=latents.dtype, device=latents.device)}
    if family == "flux":
        h, w = latents.shape[-2:]
        ids = torch.zeros(h // 2, w // 2, 3)
        ids[..., 1] = torch.arange(h // 2)[:, None]
        ids[..., 2] = torch.arange(w // 2)[None, :]
        kw["img_ids"] = ids.reshape(-1, 3).to(latents.device, latents.dtype)
        if pipe.transformer.config.guidance_embeds:
            kw["guidance"] = torch.full((b,), float(guidance), device=latents.device)
        if fam.inpainting:  # FLUX Fill: masked-image latents and the 8x8-packed pixel mask, both packed
            pix = pixel_mask(images, mask)
            masked = vae_latents(pipe, images * (pix < 0.5)) if bool(pix.any()) else latents
            f = images.shape[-1] // w  # the VAE's downsampling factor
            m = pix[:, 0].view(b, h, f, w, f).permute(0, 2, 4, 1, 3).reshape(b, f * f, h, w)
            kw["_fill"] = torch.cat([_pack(masked), _pack(m.to(latents))], dim=-1)
    if family == "pixart":
        kw["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
    return kw


def _call(den: Any, family: str, noisy: Any, t: Any, extra: dict) -> Any:
    kw = {k: v for k, v in extra.items() if not k.startswith("_")}
    dtype = den.dtype
    if "_inpaint" in extra:
        lat_mask, masked = extra["_inpaint"]
        noisy = torch_cat([noisy, lat_mask, masked])
    if family in ("sd", "sdxl", "cross"):
        return den(noisy.to(dtype), t, **kw)
    if family == "flux":
        x = _pack(noisy)
        if "_fill" in extra:
            x = torch_cat([x, extra["_fill"]], dim=-1)
        return den(hidden_states=x.to(dtype), timestep=t, **kw)
    return den(hidden_states=noisy.to(dtype), timestep=t, **kw)


def torch_cat(parts: list[Any], dim: int = 1) -> Any:
    import torch

    return torch.cat(parts, dim=dim)
