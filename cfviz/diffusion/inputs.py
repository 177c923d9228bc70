"""What denoiser calls on real images get: noise seeded per timestep, prompt embeddings, inpainting inputs.

Shared by :mod:`cfviz.diffusion.forward` (which re-exports the names it had) and :mod:`cfviz.diffusion.families`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cfviz.errors import CfvizError


def _key_words(key: str) -> list[int]:
    """Four 32-bit words of the SHA-256 of ``key`` (an image id): a stable, platform-free hash."""
    import hashlib

    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


def noise_seed(seed: int, timestep: int, draw: int = 0, key: str | None = None) -> int:
    """The generator seed for the noise at ``timestep`` (independent of the other timesteps).

    ``draw`` numbers the draws averaged at one timestep (draw 0 is the single draw of earlier
    versions: the same seed); ``key`` (an image id) gives that image its own draw
    (``noise="per-image"``), independent of the images it is batched with.

    >>> noise_seed(0, 261) == noise_seed(0, 261) != noise_seed(1, 261)
    True
    >>> len({noise_seed(0, 261), noise_seed(0, 261, draw=1), noise_seed(0, 261, key="a"), noise_seed(0, 261, key="b")})
    4
    """
    import numpy as np

    entropy = [int(seed), int(timestep)]
    if key is not None:  # tag 1 keeps per-image entropy apart from any shared one (trailing zeros pad)
        entropy += [int(draw), 1, *_key_words(key)]
    elif draw:
        entropy += [int(draw)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def draw_noise(shape: Any, seed: int, timestep: int, *, draw: int = 0, keys: Sequence[str] | None = None) -> Any:
    """Noise ``(B, *shape[1:])`` (float32, CPU) for one timestep and draw.

    ``keys=None``: one draw shared by every row (``noise="shared"``); otherwise one draw per row,
    seeded by that row's key (its image id), so a row's noise does not depend on its batch.

    >>> import torch
    >>> a = draw_noise((2, 4, 8, 8), 0, 100, keys=["x", "y"])
    >>> b = draw_noise((1, 4, 8, 8), 0, 100, keys=["y"])
    >>> torch.equal(a[1], b[0]), torch.equal(a[0], a[1])
    (True, False)
    """
    import torch

    b, rest = int(shape[0]), tuple(int(x) for x in shape[1:])
    if keys is None:
        gen = torch.Generator("cpu").manual_seed(noise_seed(seed, timestep, draw))
        return torch.randn(rest, generator=gen, dtype=torch.float32).expand(b, *rest)
    keys = list(keys)
    if len(keys) != b:
        raise CfvizError(f"noise keys: {len(keys)} image ids for a batch of {b}; give one id per image")
    rows = []
    for key in keys:
        gen = torch.Generator("cpu").manual_seed(noise_seed(seed, timestep, draw, key=key))
        rows.append(torch.randn(rest, generator=gen, dtype=torch.float32))
    return torch.stack(rows)


@dataclass
class InpaintInputs:
    """The conditioning latents of the inpainting UNet for a batch of images."""

    latents: Any  #: (B, 4, h, w) clean image latents, already times the VAE scaling factor
    mask: Any  #: (B, 1, h, w) inpainting mask at latent resolution (1 = to be inpainted)
    masked_image_latents: Any  #: (B, 4, h, w) latents of the image with the masked region blanked


def vae_latents(pipe: Any, images: Any) -> Any:
    """Deterministic latents (the posterior mean), shifted and scaled as the family's pipeline does."""
    vae = pipe.vae
    mean = vae.encode(images.to(device=vae.device, dtype=vae.dtype)).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0  # SD3's and FLUX's VAEs; SD's has none: x - 0.0 == x
    return (mean - float(shift)) * float(vae.config.scaling_factor)


def pixel_mask(images: Any, mask: Any) -> Any:
    """``(B, 1, H, W)`` float mask of ``images``, 1 = inpaint (the forms :func:`inpaint_inputs` takes)."""
    import torch

    b, _, h, w = images.shape
    if mask is None or (isinstance(mask, str) and mask == "none"):
        return torch.zeros(b, 1, h, w, dtype=images.dtype, device=images.device)
    if isinstance(mask, str) and mask == "full":
        return torch.ones(b, 1, h, w, dtype=images.dtype, device=images.device)
    if isinstance(mask, str):
        raise CfvizError(f"mask must be None, 'none', 'full' or a tensor, got {mask!r}")
    m = torch.as_tensor(mask, device=images.device, dtype=images.dtype)
    m = m[:, None] if m.ndim == 3 else m
    if m.shape[-2:] != (h, w) or m.shape[1] != 1:
        raise CfvizError(f"mask must be (B, 1, {h}, {w}), got {tuple(m.shape)}")
    return (m >= 0.5).to(images.dtype).expand(b, -1, -1, -1)


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
    pix = pixel_mask(images, mask)
    with torch.no_grad():
        latents = vae_latents(pipe, images)
        # with nothing masked the masked image is the image: skip the second VAE pass
        masked = vae_latents(pipe, images * (pix < 0.5)) if bool(pix.any()) else latents
    lat_mask = F.interpolate(pix.float(), size=latents.shape[-2:]).to(latents.dtype)
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
