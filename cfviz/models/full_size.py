"""Full-size denoisers of the newer families, with seeded random weights, built offline.

The published architectures, built from ``cfviz/models/configs/*.json`` without any download
(shape, latency, memory and capture-overhead studies; no quality is measured with them):

* ``sdxl``: the ``stabilityai/stable-diffusion-xl-base-1.0`` UNet (70 cross-attention layers),
  2,567,463,684 parameters;
* ``sd3``: the ``stabilityai/stable-diffusion-3-medium-diffusers`` MMDiT (24 joint blocks, 1536
  wide), 2,028,328,000 parameters;
* ``flux``: the ``black-forest-labs/FLUX.1-dev`` transformer (19 joint + 38 single-stream blocks,
  3072 wide, guidance embedding), 11,901,408,320 parameters.

``layers`` builds a stated fraction of a transformer's blocks at full width (FLUX.1 in float32
is ~48 GB): ``layers=(2, 4)`` gives FLUX 2 joint and 4 single-stream blocks, ``layers=12`` gives
SD3 12 joint blocks (its last block, as in the full model, has no text output). Everything
else (embedders, widths, heads, output layers) is the published model's.

``device="meta"`` builds the architecture without allocating weights (seconds, no memory): the
way to inspect a 12 B-parameter model on a laptop or in CI.

Example
-------
>>> flux = full_size_denoiser("flux", layers=(2, 4), device="meta")
>>> len(flux.transformer_blocks), len(flux.single_transformer_blocks), flux.inner_dim
(2, 4, 3072)
>>> parameter_count(full_size_denoiser("sdxl", device="meta"))
2567463684
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cfviz.errors import ConfigError
from cfviz.models._config import model_config
from cfviz.models._seeding import check_seed, seeded


@dataclass(frozen=True)
class FullSize:
    """One full-size architecture: its shipped config, diffusers class, label and block counts."""

    config: str  #: name of the JSON in ``cfviz/models/configs``
    cls: str  #: diffusers model class
    label: str  #: what ``cfviz_info["name"]`` says
    layer_keys: tuple[str, ...] = ()  #: config keys that ``layers`` sets, in order


#: The full-size denoisers by name.
FULL_SIZE_DENOISERS: dict[str, FullSize] = {
    "sdxl": FullSize("sdxl_unet", "UNet2DConditionModel",
                     "stabilityai/stable-diffusion-xl-base-1.0 unet (architecture)"),
    "sd3": FullSize("sd3_transformer", "SD3Transformer2DModel",
                    "stabilityai/stable-diffusion-3-medium-diffusers transformer (architecture)", ("num_layers",)),
    "flux": FullSize("flux_transformer", "FluxTransformer2DModel",
                     "black-forest-labs/FLUX.1-dev transformer (architecture)", ("num_layers", "num_single_layers")),
}


def full_size_config(name: str, layers: int | tuple[int, ...] | None = None) -> dict[str, Any]:
    """The diffusers config of full-size denoiser ``name``, with ``layers`` blocks if given.

    >>> full_size_config("flux", layers=(1, 2))["num_single_layers"]
    2
    """
    spec = _spec(name)
    config = model_config(spec.config)
    if layers is None:
        return config
    counts = tuple(layers) if isinstance(layers, (tuple, list)) else (layers,)
    if not spec.layer_keys:
        raise ConfigError(f"layers=... builds a fraction of a transformer's blocks; the {name} UNet is built whole "
                          "(pass layers=None)")
    full = [config[k] for k in spec.layer_keys]
    ok = (len(counts) == len(spec.layer_keys)
          and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= f for n, f in zip(counts, full))
          and counts[0] >= 1)
    if not ok:
        what = " and ".join(f"{k} (0..{f})" for k, f in zip(spec.layer_keys, full))
        example = tuple(max(1, f // 8) for f in full) if len(full) > 1 else max(1, full[0] // 8)
        raise ConfigError(f"layers={layers!r} does not fit the {name} denoiser: give {what}, the first at least 1, "
                          f"e.g. layers={example}")
    config.update(zip(spec.layer_keys, counts))
    return config


def full_size_denoiser(name: str, *, layers: int | tuple[int, ...] | None = None, seed: int = 0,
                       device: Any = "cpu", dtype: Any = None) -> Any:
    """The full-size ``name`` denoiser (see :data:`FULL_SIZE_DENOISERS`) with seeded random weights.

    Parameters
    ----------
    name:
        ``"sdxl"``, ``"sd3"`` or ``"flux"``.
    layers:
        ``None`` for every block; SD3: the number of joint blocks; FLUX: ``(joint, single-stream)``.
    seed:
        Seed of the weight initialisation (the caller's random state is left untouched).
    device, dtype:
        Where and in which dtype (default float32) the weights live. ``"meta"`` allocates nothing.
        Weights are drawn in float32 on the CPU and then moved/cast, so a float16 model needs the
        float32 one's memory while it is built.

    Building takes seconds to a minute on a CPU and 4 bytes per parameter (SDXL: ~10.3 GB).
    """
    import diffusers
    import torch

    from cfviz.models.info import make_info

    spec = _spec(name)
    config = full_size_config(name, layers)
    check_seed(seed)
    dtype = torch.float32 if dtype is None else dtype
    device = torch.device(device)
    cls = getattr(diffusers, spec.cls)
    with torch.device("meta") if device.type == "meta" else seeded(seed):  # "meta": no weights to draw
        model = cls.from_config(config)
    # a plain module cast: diffusers' ModelMixin.to(dtype) warns about fp32-kept modules these have not
    model = torch.nn.Module.to(model, device=device, dtype=dtype).eval()
    counts = None if layers is None else [int(config[k]) for k in spec.layer_keys]
    model.cfviz_info = make_info(kind=spec.cls, library="diffusers", name=spec.label, revision=None,
                                 weights="random", seed=seed, source="config", dtype=dtype, device=device,
                                 config=spec.config, layers=counts)
    return model


def full_size_inputs(name: str, model: Any, *, batch: int = 1, size: int = 64, text_length: int = 77,
                     seed: int = 1) -> dict[str, Any]:
    """Seeded keyword arguments for one call of a full-size denoiser, latent ``size`` x ``size``.

    As :func:`cfviz.models.families.denoiser_inputs` (SDXL: 77 CLIP tokens of 2048 and the
    pooled 1280 + 6 size ids; SD3: CLIP + T5 tokens of 4096; FLUX: T5 tokens, 2x2-packed
    latents, so ``size=64`` is a 32x32 token grid = a 512 px image), plus FLUX.1-dev's guidance
    scale (3.5).
    """
    import torch

    from cfviz.models.families import denoiser_inputs

    _spec(name)
    kw = denoiser_inputs(name, model, batch=batch, size=size, text_length=text_length, seed=seed)
    if name == "flux" and getattr(model.config, "guidance_embeds", False):
        kw["guidance"] = torch.full((batch,), 3.5)
    return kw


def parameter_count(model: Any) -> int:
    """Number of parameters of ``model`` (works on the meta device)."""
    return int(sum(p.numel() for p in model.parameters()))


def _spec(name: str) -> FullSize:
    if name not in FULL_SIZE_DENOISERS:
        raise ConfigError(f"full-size denoiser {name!r} is unknown; choose one of {sorted(FULL_SIZE_DENOISERS)}")
    return FULL_SIZE_DENOISERS[name]
