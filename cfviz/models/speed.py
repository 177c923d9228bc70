"""Speed options of loaded models: ``channels_last`` memory format and ``torch.compile``.

Both are off by default and applied once, right after the models load
(:func:`cfviz.evaluation.models.load_models` calls :func:`apply_speed_options`):

* ``channels_last`` stores the 4-D weights of the UNet and the VAE in NHWC order, so the
  convolutions (most of their time) run the kernels that GPUs and oneDNN prefer. Outputs stay
  the same tensors up to floating-point rounding: another kernel sums in another order.
* ``compile`` runs ``torch.compile`` on the denoiser, *regionally*: every ResNet block, every
  self-attention layer (``attn1``) and every feed-forward of the transformer blocks is compiled on
  its own; the UNet itself, its blocks and its cross-attention layers (``attn2``) are not.

Why regional: :func:`cfviz.capture` records by swapping the ``attn2`` processors and by hooking
the UNet and the feature blocks, with new recorder objects for every capture. A whole-UNet
graph would see those objects change on every batch (a recompilation each time until dynamo's
recompile limit, then silent eager fallback) and would have to break around every recorder.
The compiled regions are exactly the modules that capture never touches, so a compiled model
is captured like any other, with the same recorder code, and costs one compilation per region
shape. Most of a UNet's work is in the ResNet blocks, self-attention and feed-forwards.

Example
-------
>>> from cfviz.models import tiny_inpaint_pipeline
>>> pipe = tiny_inpaint_pipeline(seed=0)
>>> apply_speed_options(pipe, channels_last=True)
{'channels_last': ['unet', 'vae'], 'compiled': 0}
"""

from __future__ import annotations

from typing import Any

#: Values of ``ModelChoice.compile``: off, or the ``torch.compile`` backend to use.
#: ``"inductor"`` generates kernels (a C++ compiler on CPUs, Triton on GPUs); ``"aot_eager"`` and
#: ``"eager"`` only trace (no compiler needed: they check the path, they do not speed anything up).
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
COMPILE_MODES = ("off", *COMPILE_BACKENDS)
#: Backends whose outputs may differ from an uncompiled model's in the last bits (part of a store's identity).
NUMERIC_COMPILE_BACKENDS = ("inductor",)


def compile_regions(unet: Any) -> dict[str, Any]:
    """The modules of ``unet`` that :func:`apply_speed_options` compiles, by module path.

    ResNet blocks, self-attention layers (``attn1``, which capture never records: it records
    layers that attend to text) and the feed-forwards of transformer blocks; outermost only.

    >>> from cfviz.models import tiny_inpaint_pipeline
    >>> names = compile_regions(tiny_inpaint_pipeline(seed=0).unet)
    >>> sorted({n.split(".")[-1] for n in names if ".resnets." not in n}), sum(".resnets." in n for n in names)
    (['attn1', 'ff'], 11)
    """
    from diffusers.models.attention import FeedForward
    from diffusers.models.resnet import ResnetBlock2D

    out: dict[str, Any] = {}
    for name, module in unet.named_modules():
        if any(name.startswith(p + ".") for p in out):
            continue
        if isinstance(module, (ResnetBlock2D, FeedForward)) or name.endswith(".attn1"):
            out[name] = module
    return out


def check_compile(compile: str, device: Any = "cpu") -> None:
    """Refuse a ``compile`` setting that cannot work here, before any model is built.

    ``"inductor"`` needs a C++ compiler on CPUs (``$CXX``, ``g++``, ``clang++`` or ``c++``) and
    Triton on GPUs; the tracing backends need nothing.

    >>> check_compile("off"); check_compile("aot_eager", "cpu")
    >>> check_compile("fast")
    Traceback (most recent call last):
    ...
    cfviz.errors.ConfigError: models.compile must be one of off, inductor, aot_eager, eager; got 'fast'
    """
    import importlib.util
    import os
    import shutil

    from cfviz.errors import ConfigError

    if compile not in COMPILE_MODES:
        raise ConfigError(f"{{models.compile}} must be one of {', '.join(COMPILE_MODES)}; got {compile!r}",
                          "models.compile")
    if compile != "inductor":
        return
    kind = str(device).split(":", 1)[0].strip().lower()
    if kind == "cpu":
        names = [os.environ.get("CXX", "").strip(), "g++", "clang++", "c++"]
        if not any(n and shutil.which(n) for n in names):
            raise ConfigError("{models.compile} 'inductor' on the CPU needs a C++ compiler (g++ or clang++ on the "
                              "PATH, or $CXX); install one, or leave compile off", "models.compile")
    elif kind == "cuda" and importlib.util.find_spec("triton") is None:
        raise ConfigError("{models.compile} 'inductor' on a GPU needs Triton (pip install triton); install it, "
                          "or leave compile off", "models.compile")


def apply_speed_options(pipe: Any, *, channels_last: bool = False, compile: str = "off") -> dict[str, Any]:
    """Apply ``channels_last`` (UNet and VAE) and regional ``torch.compile`` (denoiser) in place.

    ``compile`` is ``"off"`` or a backend of :data:`COMPILE_BACKENDS`. Compilation itself happens
    lazily, at the first call of each region. Returns what was done (for logs and tests).
    """
    import torch

    from cfviz.capture.families import denoiser_of

    check_compile(compile, "meta")  # the value only: load_models checks the machine before loading
    done: dict[str, Any] = {"channels_last": [], "compiled": 0}
    if channels_last:
        for name in ("unet", "vae"):  # a DiT's (transformer's) only convolution is its patch embedding
            module = getattr(pipe, name, None)
            if module is not None:
                # Module.to(memory_format=...) changes only 4-D parameters and buffers (conv weights)
                torch.nn.Module.to(module, memory_format=torch.channels_last)
                done["channels_last"].append(name)
    if compile != "off":
        regions = compile_regions(denoiser_of(pipe)[0])  # its .unet or .transformer
        for module in regions.values():
            # in place: module paths, hooks and processors stay where capture finds them
            if hasattr(module, "compile"):
                module.compile(backend=compile)
            else:  # torch < 2.2 has no Module.compile: compile the forward (hooks stay outside, eager)
                module.forward = torch.compile(module.forward, backend=compile)
        done["compiled"] = len(regions)
    return done
