"""Tiny offline denoisers of every supported family, with seeded random weights (tests, demos).

Built from ``cfviz/models/configs/tiny_*.json`` without any download, like
:func:`cfviz.models.tiny_inpaint_pipeline`:

* :func:`tiny_denoiser` - ``"sd1"`` (SD 1.x-shaped text-to-image UNet), ``"sdxl"`` (added
  text/time conditioning), ``"sdxl-inpaint"`` (9 input channels), ``"sd3"`` (MMDiT, joint
  attention), ``"sd35"`` (SD3.5: Q/K norms, dual attention), ``"flux"`` (joint + single-stream
  blocks), ``"flux-fill"`` (384 input channels), ``"pixart"`` (cross-attention DiT).
* :func:`denoiser_inputs` - seeded keyword arguments for one call of such a denoiser.
* :func:`tiny_t5_tokenizer` - a T5-like SentencePiece-style tokenizer (no start token, ``</s>``
  after the text, ``<pad>`` = 0) over a small word list, built with the ``tokenizers`` library,
  since T5's real vocabulary cannot be downloaded offline. Words outside the list are spelled in
  letters, so every prompt tokenises, and rare words split into several tokens as in T5.

Numbers from these models show that code runs, not how well a method works.
"""

from __future__ import annotations

from typing import Any

from cfviz.errors import ConfigError
from cfviz.models._config import model_config
from cfviz.models._seeding import check_seed, seeded

#: Tiny denoisers: name -> (config, diffusers class, changed config keys).
TINY_DENOISERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "sd1": ("tiny_sd1_unet", "UNet2DConditionModel", {}),
    "sdxl": ("tiny_sdxl_unet", "UNet2DConditionModel", {}),
    "sdxl-inpaint": ("tiny_sdxl_unet", "UNet2DConditionModel", {"in_channels": 9}),
    "sd3": ("tiny_sd3_transformer", "SD3Transformer2DModel", {}),
    # SD3.5: an extra image-only self-attention (attn2) in the first block and RMS Q/K norms
    "sd35": ("tiny_sd3_transformer", "SD3Transformer2DModel",
             {"dual_attention_layers": [0], "qk_norm": "rms_norm"}),
    "flux": ("tiny_flux_transformer", "FluxTransformer2DModel", {}),
    "flux-fill": ("tiny_flux_transformer", "FluxTransformer2DModel", {"in_channels": 384}),
    "pixart": ("tiny_pixart_transformer", "PixArtTransformer2DModel", {}),
}

#: The tiny T5's whole words: MapDiff's prompt template, the objects of MVTec-AD, VisA and cfviz's
#: texture set, and a few states (so that every category's prompt fits its 16 tokens).
_T5_WORDS = ("a close-up cropped png photo of with damage the an on in and object good broken flawless perfect "
             "scratch scratches crack hole contamination bottle cable capsule carpet grid hazelnut leather metal "
             "nut pill screw tile toothbrush transistor wood zipper "
             "brick grass gravel candle capsules cashew chewinggum fryum macaroni1 macaroni2 pcb1 pcb2 pcb3 pcb4 "
             "pipe defect anomaly stain").split()


def tiny_denoiser(name: str, seed: int = 0) -> Any:
    """A tiny denoiser of family ``name`` (see :data:`TINY_DENOISERS`) with seeded random weights.

    >>> tiny_denoiser("sd3").config.num_layers
    2
    """
    import diffusers

    if name not in TINY_DENOISERS:
        raise ConfigError(f"tiny denoiser {name!r} is unknown; choose one of {sorted(TINY_DENOISERS)}")
    check_seed(seed)
    config, cls, changes = TINY_DENOISERS[name]
    with seeded(seed):
        model = getattr(diffusers, cls).from_config({**model_config(config), **changes})
    return model.eval()


def denoiser_inputs(name: str, model: Any, *, batch: int = 2, size: int = 16, text_length: int = 77,
                    seed: int = 1) -> dict[str, Any]:
    """Seeded keyword arguments for one call of a tiny denoiser (latent ``size`` x ``size``).

    ``text_length`` is the number of text tokens (SD3: CLIP 77 + T5; FLUX, PixArt: T5).

    >>> m = tiny_denoiser("flux"); kw = denoiser_inputs("flux", m, text_length=8)
    >>> m(**kw).sample.shape
    torch.Size([2, 64, 64])
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    cfg = model.config

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=g)

    if name.startswith("sd1") or name.startswith("sdxl"):
        kw: dict[str, Any] = {"sample": randn(batch, cfg.in_channels, size, size), "timestep": 400,
                              "encoder_hidden_states": randn(batch, text_length, cfg.cross_attention_dim)}
        if name.startswith("sdxl"):
            text_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            kw["added_cond_kwargs"] = {"text_embeds": randn(batch, text_dim),
                                       "time_ids": torch.tensor([[size * 8, size * 8, 0, 0, size * 8, size * 8]]
                                                                * batch, dtype=torch.float32)}
        return kw
    if name in ("sd3", "sd35"):
        return {"hidden_states": randn(batch, cfg.in_channels, size, size),
                "encoder_hidden_states": randn(batch, text_length, cfg.joint_attention_dim),
                "pooled_projections": randn(batch, cfg.pooled_projection_dim),
                "timestep": torch.tensor([400.0] * batch)}
    if name.startswith("flux"):
        h = w = size // 2  # FLUX packs 2x2 latent patches into one token
        img_ids = torch.zeros(h, w, 3)
        img_ids[..., 1] = torch.arange(h)[:, None]
        img_ids[..., 2] = torch.arange(w)[None, :]
        return {"hidden_states": randn(batch, h * w, cfg.in_channels),
                "encoder_hidden_states": randn(batch, text_length, cfg.joint_attention_dim),
                "pooled_projections": randn(batch, cfg.pooled_projection_dim),
                "timestep": torch.tensor([0.4] * batch), "img_ids": img_ids.reshape(h * w, 3),
                "txt_ids": torch.zeros(text_length, 3)}
    if name == "pixart":
        return {"hidden_states": randn(batch, cfg.in_channels, size, size),
                "encoder_hidden_states": randn(batch, text_length, cfg.caption_channels),
                "timestep": torch.tensor([400] * batch),
                "added_cond_kwargs": {"resolution": None, "aspect_ratio": None}}
    raise ConfigError(f"tiny denoiser {name!r} is unknown; choose one of {sorted(TINY_DENOISERS)}")


def tiny_t5_tokenizer(model_max_length: int = 16) -> Any:
    """A T5-like tokenizer over a small vocabulary, built offline (see the module docstring).

    >>> tok = tiny_t5_tokenizer()
    >>> tok.convert_ids_to_tokens(tok("a photo of damage").input_ids)
    ['▁a', '▁photo', '▁of', '▁damage', '</s>']
    >>> tok.convert_ids_to_tokens(tok("dent").input_ids)  # not in the word list: spelled out
    ['▁', 'd', 'e', 'n', 't', '</s>']
    """
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{w}", -1.0) for w in _T5_WORDS]
    pieces += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=int(model_max_length), padding_side="right")


#: Tiny pipelines: name -> (tiny denoiser, diffusers pipeline class).
TINY_PIPELINES: dict[str, tuple[str, str]] = {
    "sd1": ("sd1", "StableDiffusionPipeline"),
    "sdxl": ("sdxl", "StableDiffusionXLPipeline"),
    "sdxl-inpaint": ("sdxl-inpaint", "StableDiffusionXLInpaintPipeline"),
    "sd3": ("sd3", "StableDiffusion3Pipeline"),
    "sd35": ("sd35", "StableDiffusion3Pipeline"),  # SD3.5: Q/K norms and an image-only attn2
    "flux": ("flux", "FluxPipeline"),
    "flux-fill": ("flux-fill", "FluxFillPipeline"),
    "pixart": ("pixart", "PixArtAlphaPipeline"),
}


def _clip_text(hidden: int, projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(**{**model_config("tiny_text_encoder"), "hidden_size": hidden,
                            "projection_dim": projection or hidden})
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _t5_text(vocab: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(cfg).eval()


#: ``cfviz evaluate --diffusion`` names of the tiny pipelines: ``"tiny-<name>"`` (``"tiny"`` is SD2 inpainting).
TINY_DIFFUSION: dict[str, str] = {f"tiny-{name}": name for name in TINY_PIPELINES}


def tiny_family_pipeline(name: str, seed: int = 0, device: Any = "cpu", dtype: Any = None) -> Any:
    """A tiny diffusers pipeline of family ``name`` (see :data:`TINY_PIPELINES`), built offline.

    The denoiser of :func:`tiny_denoiser`, a tiny VAE (16 latent channels with SD3/FLUX's shift
    and scale for those families), tiny CLIP text encoders with cfviz's offline CLIP tokenizer and
    tiny T5 encoders with :func:`tiny_t5_tokenizer` (16 tokens). Schedulers: SD2's DDIM schedule
    for the DDPM families, ``FlowMatchEulerDiscreteScheduler`` for SD3/FLUX.

    >>> pipe = tiny_family_pipeline("sd3")
    >>> type(pipe).__name__, pipe.tokenizer_3.model_max_length
    ('StableDiffusion3Pipeline', 16)
    """
    import diffusers
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

    from cfviz.models.diffusion import _attach_info, _cast, ddim_scheduler
    from cfviz.models.tokenizer import clip_tokenizer

    if name not in TINY_PIPELINES:
        raise ConfigError(f"tiny pipeline {name!r} is unknown; choose one of {sorted(TINY_PIPELINES)}")
    denoiser_name, cls = TINY_PIPELINES[name]
    check_seed(seed)
    denoiser = tiny_denoiser(denoiser_name, seed=seed)
    t5_tok = tiny_t5_tokenizer()
    clip = clip_tokenizer() if not name.startswith("pixart") else None  # one object for every CLIP stream
    with seeded(seed + 1):
        flow = name.startswith(("sd3", "flux"))
        vae = AutoencoderKL.from_config(model_config("tiny_vae16" if flow else "tiny_vae")).eval()
        if name == "sd1":
            parts = {"unet": denoiser, "text_encoder": _clip_text(32), "tokenizer": clip,
                     "safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
        elif name.startswith("sdxl"):
            parts = {"unet": denoiser, "text_encoder": _clip_text(32), "tokenizer": clip,
                     "text_encoder_2": _clip_text(32, 32), "tokenizer_2": clip}
        elif name.startswith("sd3"):
            parts = {"transformer": denoiser, "text_encoder": _clip_text(16, 32), "tokenizer": clip,
                     "text_encoder_2": _clip_text(16, 32), "tokenizer_2": clip,
                     "text_encoder_3": _t5_text(len(t5_tok)), "tokenizer_3": t5_tok}
        elif name.startswith("flux"):
            parts = {"transformer": denoiser, "text_encoder": _clip_text(32), "tokenizer": clip,
                     "text_encoder_2": _t5_text(len(t5_tok)), "tokenizer_2": t5_tok}
        else:
            parts = {"transformer": denoiser, "text_encoder": _t5_text(len(t5_tok)), "tokenizer": t5_tok}
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0) if flow else ddim_scheduler()
    pipe = getattr(diffusers, cls)(vae=vae, scheduler=scheduler, **parts)
    pipe.set_progress_bar_config(disable=True)
    dtype = torch.float32 if dtype is None else dtype
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            _cast(part, device, dtype)
    _attach_info(pipe, name=f"cfviz-tiny-{name}", revision=None, weights="random", seed=seed, source="config",
                 dtype=dtype, device=torch.device(device))
    return pipe
