"""Stable Diffusion inpainting: the real pipeline, full-size random-weight builders, a tiny one.

* :func:`load_inpaint_pipeline` - real weights from the hub (or its cache) or a local folder.
* :func:`tiny_inpaint_pipeline` - a seeded, few-MB SD-shaped inpainting pipeline for tests and
  offline demos (512 px images give 64x64 latents, like SD).
* :func:`sd2_inpaint_unet`, :func:`sd1_unet`, :func:`random_inpaint_pipeline` - the published
  architectures with seeded random weights, for shape, latency and memory studies.

Every returned pipeline and UNet carries a ``cfviz_info`` dict (see :func:`cfviz.models.model_info`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cfviz.errors import ConfigError, ModelUnavailableError
from cfviz.models._config import model_config
from cfviz.models._seeding import check_seed, seeded
from cfviz.models.info import make_info

#: The diffusion model of CLIPFusion.
DEFAULT_SD_INPAINT = "stabilityai/stable-diffusion-2-inpainting"
#: Environment variable that replaces the default download with a local pipeline folder.
PIPELINE_ENV = "CFVIZ_SD_INPAINT"
TINY_PIPELINE = "cfviz-tiny-sd-inpainting"

_FIX = (f"pass a local diffusers folder as model=..., set {PIPELINE_ENV} to one, or run once with network "
        "access so that the Hugging Face cache (HF_HOME / HF_HUB_CACHE) holds it")
# only what an inpainting pipeline needs: configs, tokenizer files and the full-precision
# safetensors of unet / vae / text_encoder (no safety checker, no .ckpt, no fp16 variants)
_ALLOW = ["model_index.json", "scheduler/*", "tokenizer/*",
          "unet/config.json", "vae/config.json", "text_encoder/config.json",
          "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors.index.json",
          "unet/diffusion_pytorch_model-*-of-*.safetensors",
          "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors.index.json",
          "vae/diffusion_pytorch_model-*-of-*.safetensors",
          "text_encoder/model.safetensors", "text_encoder/model.safetensors.index.json",
          "text_encoder/model-*-of-*.safetensors"]
_IGNORE = ["*.fp16.*", "*.ckpt", "*.msgpack", "*.onnx", "*.bin", "safety_checker/*"]
_WEIGHTED = ("unet", "vae", "text_encoder")
# every other supported family: the transformer and up to three text encoders (SDXL, SD3, FLUX)
_ALLOW_ANY = _ALLOW + ["tokenizer_2/*", "tokenizer_3/*"] + [
    f"{c}/{f}" for c in ("transformer", "text_encoder_2", "text_encoder_3")
    for f in ("config.json", "*.safetensors", "*.safetensors.index.json")]

#: Diffusers pipeline classes ``cfviz evaluate --diffusion`` takes, with the family of their
#: denoiser (:mod:`cfviz.capture.families`). The class is read from a folder's ``model_index.json``.
PIPELINE_FAMILIES: dict[str, str] = {
    "StableDiffusionPipeline": "sd", "StableDiffusionInpaintPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl", "StableDiffusionXLInpaintPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux", "FluxFillPipeline": "flux",
    "PixArtAlphaPipeline": "pixart", "PixArtSigmaPipeline": "pixart",
}
#: Families whose pipelines ship a DDPM-style schedule (``scheduler="ddim"`` swaps in DDIM);
#: SD3 and FLUX keep their flow-matching scheduler (cfviz noises them itself: sigma = t / 1000).
_DDPM_FAMILIES = ("sd", "sdxl", "pixart")


# ---------------------------------------------------------------------------------------------
# schedulers and single models


def ddim_scheduler(config: Any = None) -> Any:
    """A ``DDIMScheduler`` with SD2-inpainting's noise schedule (or built from ``config``).

    scaled_linear betas 0.00085-0.012 over 1000 steps, epsilon prediction, ``steps_offset=1``,
    ``clip_sample=False``, ``set_alpha_to_one=False``. Pass another scheduler's ``config`` to
    switch a real pipeline to DDIM with that pipeline's own schedule; latents are never clipped
    unless that config says so (DDIM's own default, meant for pixel-space models, would clip).

    >>> s = ddim_scheduler()
    >>> s.set_timesteps(2); s.timesteps.tolist()
    [501, 1]
    """
    from diffusers import DDIMScheduler

    if config is None:
        return DDIMScheduler.from_config(model_config("sd2_inpainting_ddim_scheduler"))
    # PNDM configs have no clip_sample key; DDIM would default to clipping latents to [-1, 1]
    return DDIMScheduler.from_config({"clip_sample": False, **dict(config)})


def sd2_inpaint_unet(seed: int = 0, *, device: Any = "cpu", dtype: Any = None) -> Any:
    """The SD2-inpainting UNet architecture (9 input channels, ~866M parameters), random weights.

    Built from ``cfviz/models/configs/sd2_inpainting_unet.json``; takes seconds and ~3.5 GB
    in float32.

    Skipped in doctests: builds 866M parameters.

    >>> unet = sd2_inpaint_unet(seed=0)  # doctest: +SKIP
    >>> unet.config.in_channels  # doctest: +SKIP
    9
    """
    return _random_unet("sd2_inpainting_unet", f"{DEFAULT_SD_INPAINT} (architecture)", seed, device, dtype)


def sd1_unet(seed: int = 0, *, device: Any = "cpu", dtype: Any = None) -> Any:
    """A Stable Diffusion 1.x text-to-image UNet architecture (~860M parameters), random weights.

    Skipped in doctests: builds 860M parameters.

    >>> unet = sd1_unet(seed=0)  # doctest: +SKIP
    >>> unet.config.cross_attention_dim  # doctest: +SKIP
    768
    """
    return _random_unet("sd1_unet", "stable-diffusion-v1 unet (architecture)", seed, device, dtype)


def _random_unet(config_name: str, label: str, seed: int, device: Any, dtype: Any) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    check_seed(seed)
    dtype = torch.float32 if dtype is None else dtype
    with seeded(seed):
        unet = UNet2DConditionModel.from_config(model_config(config_name))
    unet = _cast(unet, device, dtype).eval()
    unet.cfviz_info = make_info(kind="unet", library="diffusers", name=label, revision=None, weights="random",
                                seed=seed, source="config", dtype=dtype, device=torch.device(device),
                                config=config_name)
    return unet


# ---------------------------------------------------------------------------------------------
# pipelines with random weights


def tiny_inpaint_pipeline(seed: int = 0, device: Any = "cpu", dtype: Any = None) -> Any:
    """A tiny ``StableDiffusionInpaintPipeline`` with seeded random weights, built offline.

    Same interfaces and geometry as SD2-inpainting: a 9-channel UNet with cross-attention at
    the 64x64 and 32x32 latent resolutions (and the 16x16 mid block), a VAE with the real
    downsampling factor 8, a CLIP text encoder with 77 positions, SD2's tokenizer and an SD2
    DDIM schedule; the safety checker is off. A 2-step call at 512 px takes a second or two on
    a CPU. Its outputs show that code runs, not how well a method works.

    >>> import numpy as np, PIL.Image
    >>> pipe = tiny_inpaint_pipeline(seed=0)
    >>> img = PIL.Image.new("RGB", (512, 512)); mask = PIL.Image.new("L", (512, 512), 255)
    >>> out = pipe("a photo", image=img, mask_image=mask, num_inference_steps=2, output_type="np")
    >>> out.images.shape
    (1, 512, 512, 3)
    """
    return _random_sd_inpaint(("tiny_inpainting_unet", "tiny_vae", "tiny_text_encoder"), TINY_PIPELINE, seed,
                              device, dtype)


def random_inpaint_pipeline(seed: int = 0, *, device: Any = "cpu", dtype: Any = None) -> Any:
    """SD2-inpainting at full size with seeded random weights: for end-to-end latency benchmarks.

    The SD2-inpainting UNet (866M), the SD VAE (84M) and SD2's OpenCLIP-H text tower as a
    ``CLIPTextModel`` (340M), with the offline tokenizer and the SD2 DDIM schedule.
    Building takes tens of seconds and ~5 GB in float32.

    Skipped in doctests: builds 1.3B parameters.

    >>> pipe = random_inpaint_pipeline(seed=0)  # doctest: +SKIP
    """
    return _random_sd_inpaint(("sd2_inpainting_unet", "sd_vae", "sd2_text_encoder"),
                              f"{DEFAULT_SD_INPAINT} (architecture)", seed, device, dtype)


def _random_sd_inpaint(configs: tuple[str, str, str], name: str, seed: int, device: Any, dtype: Any) -> Any:
    """An SD inpainting pipeline of seeded random weights from (UNet, VAE, text encoder) config names."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from cfviz.models.tokenizer import clip_tokenizer

    check_seed(seed)
    with seeded(seed):
        unet = UNet2DConditionModel.from_config(model_config(configs[0]))
        vae = AutoencoderKL.from_config(model_config(configs[1]))
        text_encoder = CLIPTextModel(CLIPTextConfig(**model_config(configs[2])))
    dtype = torch.float32 if dtype is None else dtype
    unet, vae, text_encoder = (_cast(m, device, dtype).eval() for m in (unet, vae, text_encoder))
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                          scheduler=ddim_scheduler(), safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    _attach_info(pipe, name=name, revision=None, weights="random", seed=seed, source="config",
                 dtype=dtype, device=torch.device(device))
    return pipe


def _cast(module: Any, device: Any, dtype: Any) -> Any:
    """Move and cast a freshly built model.

    diffusers 0.42's ``ModelMixin.to(dtype)`` warns about modules to keep in float32 even when
    there are none; cfviz's configs have none, so such models are cast as plain modules.
    """
    import torch

    if getattr(module, "_keep_in_fp32_modules", None):
        return module.to(device=torch.device(device), dtype=dtype)
    return torch.nn.Module.to(module, device=torch.device(device), dtype=dtype)


def _attach_info(pipe: Any, **fields: Any) -> None:
    from cfviz.capture.families import denoiser_of, detect_family

    extra = fields.pop("extra", None) or {}
    cls = type(pipe).__name__
    kind = "inpaint_pipeline" if cls == "StableDiffusionInpaintPipeline" else "diffusion_pipeline"
    family = detect_family(pipe)
    if cls != "StableDiffusionInpaintPipeline":  # SD2-inpainting's info stays as it was
        extra = {**extra, "pipeline_class": cls, "family": family.name}
    pipe.cfviz_info = make_info(kind=kind, library="diffusers", **fields, **extra,
                                scheduler=type(pipe.scheduler).__name__)
    denoiser, _ = denoiser_of(pipe)
    denoiser.cfviz_info = dict(pipe.cfviz_info, kind="unet" if hasattr(pipe, "unet") else "transformer",
                               pipeline=fields["name"])


# ---------------------------------------------------------------------------------------------
# real weights


def load_inpaint_pipeline(model: str | os.PathLike[str] = DEFAULT_SD_INPAINT, *, revision: str | None = None,
                          device: Any = "cpu", dtype: Any = None,
                          cache_dir: str | os.PathLike[str] | None = None, scheduler: str = "ddim") -> Any:
    """Load a diffusers pipeline of any supported family with real weights (safety checker off).

    The pipeline class is the one its ``model_index.json`` names (SD2-inpainting by default; any
    of :data:`PIPELINE_FAMILIES`: SD 1.x/2.x plain and inpainting, SDXL and SDXL inpainting,
    SD3/3.5, FLUX and FLUX Fill, PixArt). :func:`load_diffusion_pipeline` is the same function.

    Parameters
    ----------
    model:
        A hub id (default SD2-inpainting) or a local diffusers folder (with ``model_index.json``).
        When left at the default and ``CFVIZ_SD_INPAINT`` is set, that folder is used instead.
    revision:
        Hub branch, tag or commit (default ``main``); ignored for folders.
    device, dtype:
        Target device and dtype (default ``torch.float32``; ``torch.float16`` on GPUs).
    cache_dir:
        Hub cache folder (default ``HF_HUB_CACHE`` / ``HF_HOME``).
    scheduler:
        ``"ddim"`` (default): the checkpoint's noise schedule as a ``DDIMScheduler``, like the
        tiny and random pipelines, so every cfviz pipeline steps the same way;
        ``"checkpoint"``: the scheduler the checkpoint ships (PNDM for SD2-inpainting). SD3 and
        FLUX keep their flow-matching scheduler either way (cfviz noises them itself).

    Only the full-precision safetensors of the denoiser, VAE and text encoders are fetched from the
    hub; a local folder without safetensors is read with ``torch.load(weights_only=True)``.

    Raises
    ------
    ModelUnavailableError
        Within seconds, with one sentence naming what was looked for and how to supply it, when
        the folder is missing or the weights are neither cached nor downloadable.

    Example
    -------
    Skipped in doctests: needs the weights or the network.

    >>> pipe = load_inpaint_pipeline()  # doctest: +SKIP
    """
    import importlib.util

    import diffusers
    import torch
    from diffusers.pipelines import pipeline_utils

    dtype = torch.float32 if dtype is None else dtype
    if scheduler not in ("ddim", "checkpoint"):
        raise ConfigError(f"scheduler must be 'ddim' or 'checkpoint', got {scheduler!r}")
    model, from_env = pipeline_override(os.fspath(model))
    if looks_like_folder(model):
        folder = _check_folder(Path(model).expanduser(), from_env=from_env)
        name, source, commit = str(folder), "local", None
    else:
        from cfviz.models.hub import hub_cache_dir, hub_snapshot

        # the cache folder the environment names now (huggingface_hub reads it once, at import)
        folder = hub_snapshot(model, revision=revision, cache_dir=hub_cache_dir(cache_dir), allow_patterns=_ALLOW_ANY,
                              ignore_patterns=_IGNORE, what=f"the diffusion pipeline weights {model!r}",
                              fix=_FIX)
        _check_folder(folder, from_env=False, hub_id=model)
        name, source = model, "hub"
        commit = folder.name if folder.parent.name == "snapshots" else None
    cls_name = pipeline_class(folder) or "StableDiffusionInpaintPipeline"
    pipeline_cls = getattr(diffusers, cls_name)
    parts = _components(folder)
    has_safetensors = all(any(p.suffix == ".safetensors" for p in _weights_in(folder / c)) for c in parts)
    # newer diffusers renamed torch_dtype to dtype (and warn on the old name)
    dtype_kw = "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
    # SD 1.x/2.x pipelines ship a safety checker: never loaded (cfviz reads the denoiser only)
    safety = ({"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
              if cls_name in ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline") else {})
    # without safetensors, diffusers and transformers fall back to torch.load(weights_only=True)
    try:
        pipe = pipeline_cls.from_pretrained(
            str(folder), **safety,
            use_safetensors=has_safetensors or None, local_files_only=True,
            low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None, **{dtype_kw: dtype})
    except (ImportError, TypeError, AttributeError, NameError):  # our bugs or a broken install: keep the trace
        raise
    except Exception as exc:  # damaged files: SafetensorError, OSError, JSON errors, shape mismatches
        text = " ".join(str(exc).split())[:300]
        raise ModelUnavailableError(f"the diffusers pipeline in {folder} cannot be loaded ({type(exc).__name__}: "
                                    f"{text}); re-save it with pipe.save_pretrained() or download it again") from None
    pipe.set_progress_bar_config(disable=True)
    if scheduler == "ddim" and PIPELINE_FAMILIES.get(type(pipe).__name__, "sd") in _DDPM_FAMILIES:
        pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    pipe = pipe.to(torch.device(device))
    _attach_info(pipe, name=name, revision=revision or ("main" if source == "hub" else None),
                 weights="pretrained", seed=None, source=source, dtype=dtype, device=torch.device(device),
                 extra={"commit": commit, "folder": str(folder)})
    return pipe


#: The same loader under the name that says what it takes.
load_diffusion_pipeline = load_inpaint_pipeline


def looks_like_folder(value: str) -> bool:
    """Whether ``model`` names a local folder rather than a hub id (``owner/name``): anything else
    that looks like a path is a folder.

    >>> looks_like_folder("stabilityai/stable-diffusion-2-inpainting"), looks_like_folder("./weights/sd2")
    (False, True)
    """
    if Path(value).expanduser().exists():
        return True
    return (value.startswith((".", "/", "~")) or "\\" in value or value.count("/") != 1
            or os.sep != "/" and os.sep in value)


def pipeline_override(model: str) -> tuple[str, bool]:
    """``model``, or the folder that ``CFVIZ_SD_INPAINT`` names in place of the default hub id; whether it did."""
    env_folder = os.environ.get(PIPELINE_ENV, "").strip()
    if env_folder and model == DEFAULT_SD_INPAINT:
        return env_folder, True
    return model, False


def folder_problems(folder: Path) -> list[str]:
    """What a local folder lacks to be a complete diffusers pipeline (empty: nothing).

    Cheap: only ``model_index.json`` and file names are read (each weighted component's config and
    weights: the denoiser, the VAE and the text encoders that ``model_index.json`` lists; SD's
    ``unet``, ``vae`` and ``text_encoder`` when it lists none).
    """
    parts = _components(folder)
    missing = [p for p in ("model_index.json", *(f"{c}/config.json" for c in parts))
               if not (folder / p).is_file()]
    missing += [f"{c} weights" for c in parts if (folder / c).is_dir() and not _weights_in(folder / c)]
    return missing


def pipeline_class(folder: str | os.PathLike[str]) -> str | None:
    """The pipeline class a diffusers folder's ``model_index.json`` names (None: no readable name).

    >>> pipeline_class("/no/such/folder") is None
    True
    """
    index = _model_index(Path(folder))
    name = index.get("_class_name")
    return name if isinstance(name, str) else None


def unsupported_pipeline(folder: str | os.PathLike[str]) -> str | None:
    """Why cfviz cannot evaluate the pipeline in ``folder`` (None: its class is supported or unnamed)."""
    cls = pipeline_class(folder)
    if cls is None or cls in PIPELINE_FAMILIES:
        return None
    return (f"its model_index.json names {cls}, which cfviz cannot evaluate (supported: "
            f"{', '.join(PIPELINE_FAMILIES)})")


def _model_index(folder: Path) -> dict[str, Any]:
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _components(folder: Path) -> tuple[str, ...]:
    """The weighted components ``model_index.json`` lists (denoiser, VAE, text encoders), in order."""
    index = _model_index(folder)
    names = tuple(k for k, v in index.items()
                  if (k in ("unet", "transformer", "vae") or k.startswith("text_encoder"))
                  and isinstance(v, (list, tuple)) and len(v) == 2 and v[0] is not None)
    return names or _WEIGHTED


def _check_folder(folder: Path, *, from_env: bool, hub_id: str | None = None) -> Path:
    origin = f" (from {PIPELINE_ENV})" if from_env else ""
    if not folder.is_dir():
        raise ModelUnavailableError(f"Diffusion pipeline folder {folder}{origin} does not exist; pass a "
                                    f"diffusers folder (with model_index.json) as model=..., set {PIPELINE_ENV} "
                                    "to one, or pass a hub id such as "
                                    f"{DEFAULT_SD_INPAINT!r} to download it")
    what = f"the hub snapshot of {hub_id!r} ({folder})" if hub_id else f"folder {folder}{origin}"
    unsupported = unsupported_pipeline(folder)
    if unsupported:
        raise ModelUnavailableError(f"{what} is not a pipeline cfviz can evaluate: {unsupported}")
    missing = folder_problems(folder)
    if missing:
        fix = ("run once with network access to complete the download (cfviz fetches only safetensors weights), "
               "or pass a local folder as model=..."
               if hub_id else "point model=... at a folder saved with pipe.save_pretrained(), or at a hub id")
        raise ModelUnavailableError(f"{what} is not a complete diffusers pipeline "
                                    f"(missing {', '.join(missing)}); {fix}")
    return folder


def _weights_in(sub: Path) -> list[Path]:
    return [p for p in sub.iterdir() if p.suffix in (".safetensors", ".bin") and ".fp16." not in p.name]
