"""Settings of an evaluation run, split by what they invalidate.

* :class:`ModelChoice` — which CLIP and inpainting models (tiny offline, full-size random, or
  real weights), device and dtype.
* :class:`ExtractionConfig` — everything that shapes what the models output per image (sizes,
  timesteps, prompt, captured layers and blocks, CLIP windows). It is the capture store's
  configuration: change one field and a new store is needed (the store refuses to mix).
* :class:`ScoringConfig` — everything computed afterwards from the store (fusion weights,
  normalisation, image-score rule, smoothing, which timesteps and blocks feed the maps). Changing
  it never re-runs a model.

Every value is checked when a configuration is made (and again by :meth:`RunSpec.validate`),
so a bad setting fails at once with a :class:`~cfviz.errors.ConfigError` naming it, before any
data is read or model built:

>>> ScoringConfig(alpha_seg=2.0)
Traceback (most recent call last):
...
cfviz.errors.ConfigError: scoring.alpha_seg must be between 0 and 1 (the CLIP branch's weight in the fused map), got 2.0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cfviz.errors import ConfigError

from cfviz.clip.object_names import OBJECT_NAME_MODES, object_name
from cfviz.diffusion.forward import DEFAULT_TIMESTEPS, NOISE_MODES, PROMPT_TEMPLATE
from cfviz.diffusion.mapdiff import DEFAULT_FEATURE_BLOCK, DEFAULT_MIN_RESOLUTION, VISUAL_POOLINGS
from cfviz.fusion import ALPHA_CLASSIFICATION, ALPHA_SEGMENTATION, IMAGE_SCORES  # image_score's choices
from cfviz.models.speed import COMPILE_MODES, NUMERIC_COMPILE_BACKENDS

METHODS = ("clipfusion", "patchclip", "mapdiff", "winclip", "aaclip")
CLIP_MODES = ("tiny", "random", "pretrained")
DTYPES = ("float32", "float16", "bfloat16")
#: What a capture store keeps of the test images: everything, or M_diff_V's distance maps in place
#: of their UNet features (see cfviz.evaluation.compact).
STORE_FORMS = ("full", "compact")
NORMALIZATIONS = ("dataset", "image", "reference", "none", "inductive")
SCORE_RULES = ("max", "topk_mean", "mean")
# --- the one comparison rule (issue 20): run-level scoring settings applied to every method alike
#: ``ScoringConfig.smoothing``: ``sigma`` on every method's final map, or each method's own favourite
#: (CLIPFusion/PatchCLIP/MapDiff smoothed, WinCLIP unsmoothed as published, AA-CLIP its own blur only).
SMOOTHINGS = ("shared", "own")
CLIP_BRANCHES = ("patchclip", "aaclip")
INPAINT_MASKS = ("none", "full")
#: AA-CLIP's class names in its prompts (see cfviz.clip.aaclip.names).
AACLIP_NAMES = ("descriptive", "plain")
#: How AA-CLIP's patch-grid maps are upsampled (cfviz.clip.aaclip.model.UPSAMPLE_MODES).
AACLIP_UPSAMPLE = ("align_corners", "half_pixel")
#: ``ScoringConfig.eval_size`` for pixel metrics at each image's own mask size, and the grid maps
#: are fused on then.
NATIVE = "native"
NATIVE_WORKING_GRID = 256
#: Which PatchCLIP score maps are merged into a map: patch tokens only, windows only, or the mean of both.
MAP_SOURCES = ("mean", "patches", "windows")
#: Which words' cross-attention M_diff_L averages: the [state] word(s), the [object] word(s), or every word.
LANGUAGE_TOKENS = ("state", "object", "all")
#: Which prompt tokens the store keeps: the language words only, or every token of the prompt too.
TOKEN_MODES = ("language", "all")
#: How WinCLIP's prompt embeddings are averaged into the two text anchors (see cfviz.clip.text).
PROMPT_AVERAGES = ("normalized", "raw")
#: Training timesteps of the Stable Diffusion noise schedules (valid timesteps are 0..999).
NUM_TRAIN_TIMESTEPS = 1000
#: Downsampling factor of the SD VAE: latents (and the finest cross-attention maps) are size / 8.
VAE_FACTOR = 8
#: Words of ``ExtractionConfig.state`` whose attention is not recorded.
STOP_WORDS = ("and", "or", "a", "with", "of", "the")
#: Methods that use MapDiff's language map (cross-attention) and visual map (UNet features).
DIFFUSION_METHODS = ("clipfusion", "mapdiff")
#: Methods whose maps are normalised with ``ScoringConfig.normalization``.
NORMALIZED_METHODS = ("clipfusion", "patchclip", "mapdiff")


# ---------------------------------------------------------------------------------------------
# checks: each raises a ConfigError whose template marks the setting as {path}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: Any, path: str, *, minimum: int, why: str = "") -> None:
    """``value`` must be an integer >= ``minimum``."""
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{{{path}}} must be an integer >= {minimum}{why}, got {value!r}", path)


def check_fraction(value: Any, path: str, *, why: str = "", open_low: bool = False) -> None:
    """``value`` must be a finite number in [0, 1] (or (0, 1] with ``open_low``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > 1 or value < 0 or (open_low and value == 0):
        low = "above 0 and at most 1" if open_low else "between 0 and 1"
        raise ConfigError(f"{{{path}}} must be {low}{why}, got {value!r}", path)


def check_choice(value: Any, path: str, choices: Sequence[str]) -> None:
    """``value`` must be one of ``choices`` (the message lists them and the closest one)."""
    if value not in choices:
        import difflib

        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{{{path}}} must be one of {', '.join(map(str, choices))}; got {value!r}{hint}", path)


def check_ints(values: Any, path: str, *, minimum: int, maximum: int | None = None, what: str = "integers",
               why: str = "", empty_ok: bool = False) -> None:
    """``values`` must be a (non-empty) sequence of integers in [minimum, maximum)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"{{{path}}} must be a list of {what}, got {values!r}", path)
    if not values and not empty_ok:
        raise ConfigError(f"{{{path}}} must list at least one of the {what}, got none", path)
    bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum})"
    bad = [v for v in values if not _is_int(v) or v < minimum or (maximum is not None and v >= maximum)]
    if bad:
        raise ConfigError(f"{{{path}}} must be {what} {bound}{why}, got {', '.join(map(repr, bad))}", path)


@dataclass(frozen=True)
class ModelChoice:
    """Which models to run.

    Attributes
    ----------
    clip:
        ``"tiny"`` (offline, random weights), ``"random"`` (full-size ``clip_arch`` with random
        weights) or ``"pretrained"`` (``clip_arch`` with ``clip_pretrained`` weights: a tag or a file).
    diffusion:
        ``"tiny"`` (SD2 inpainting), ``"tiny-<family>"`` (``tiny-sd1``, ``tiny-sdxl``,
        ``tiny-sdxl-inpaint``, ``tiny-sd3``, ``tiny-sd35``, ``tiny-flux``, ``tiny-flux-fill``, ``tiny-pixart``),
        ``"random"`` (full-size SD2-inpainting architecture, random weights), or a hub id / local
        folder of any supported pipeline (:data:`cfviz.models.diffusion.PIPELINE_FAMILIES`).
    seed:
        Seed of random weights (tiny and random models).
    dtype:
        Parameter dtype of every model (CLIP, VAE, text encoder, denoiser): ``"float32"`` (the
        default, on CPUs too), ``"float16"`` or ``"bfloat16"`` (GPUs; both also run on CPUs, slowly).
        Inputs are cast where the models take them; attention probabilities are computed in
        float32 and the store keeps float16 maps whatever the dtype (ours).
    compile:
        ``torch.compile`` of the denoiser, by region (:mod:`cfviz.models.speed`): ``"off"``
        (default) or a backend: ``"inductor"`` (generated kernels: a speed-up, needs a C++
        compiler on CPUs), ``"aot_eager"`` or ``"eager"`` (tracing only: checks the path).
    channels_last:
        Keep the UNet's and VAE's convolution weights in ``channels_last`` (NHWC) order, which
        GPU and oneDNN convolution kernels prefer (default ``False``).
    """

    clip: str = "tiny"
    clip_arch: str = "ViT-B-16-plus-240"
    clip_pretrained: str | None = "laion400m_e32"
    diffusion: str = "tiny"
    revision: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    compile: str = "off"
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_choice(self.clip, "models.clip", CLIP_MODES)
        check_choice(self.dtype, "models.dtype", DTYPES)
        check_choice(self.compile, "models.compile", COMPILE_MODES)
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"{{models.channels_last}} must be True or False, got {self.channels_last!r}",
                              "models.channels_last")
        check_int(self.seed, "models.seed", minimum=0)
        for path, value in (("models.clip_arch", self.clip_arch), ("models.diffusion", self.diffusion),
                            ("models.device", self.device)):
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{{{path}}} must be a non-empty string, got {value!r}", path)
        if self.clip == "pretrained" and not (isinstance(self.clip_pretrained, str) and self.clip_pretrained.strip()):
            raise ConfigError("{models.clip} 'pretrained' needs {models.clip_pretrained}: an open_clip "
                              "pretrained tag (e.g. 'laion400m_e32') or a checkpoint file", "models.clip_pretrained",
                              mentions=("models.clip",))

    def identity(self) -> dict[str, Any]:
        """The settings as a capture store's identity records them (``runner.model_identity``).

        The speed options appear only when they may change the numbers, so stores written before
        they existed (and runs that leave them off) keep matching:

        * ``channels_last``: NHWC convolution kernels sum in another order (other last bits);
        * ``compile="inductor"``: generated, fused kernels round differently; ``"eager"`` and
          ``"aot_eager"`` run the very kernels of an uncompiled model (bit-identical outputs,
          tests/test_dtype_speed.py), so they are left out like ``"off"``.

        >>> ModelChoice(channels_last=True).identity()["channels_last"], "compile" in ModelChoice().identity()
        (True, False)
        """
        out = asdict(self)
        if not self.channels_last:
            out.pop("channels_last")
        if self.compile not in NUMERIC_COMPILE_BACKENDS:
            out.pop("compile")
        return out

    @property
    def random_weights(self) -> bool:
        """True when any model has random weights (results show the pipeline works, not detection quality)."""
        from cfviz.models.families import TINY_DIFFUSION

        return self.clip in ("tiny", "random") or self.diffusion in ("tiny", "random", *TINY_DIFFUSION)


@dataclass(frozen=True)
class ExtractionConfig:
    """What the models compute per image (the capture store's configuration).

    Attributes
    ----------
    clip_size:
        Side of the images fed to CLIP. ``None`` (the default) = the model's own input size
        (``visual.image_size``): 240 for ViT-B-16-plus-240 (the paper's 240 px), 224 for ViT-B-32,
        336 for ViT-L-14-336. A given size must be the model's (refused before any model loads);
        the store records the resolved size (:func:`resolve_clip_size`).
    """

    clip_size: int | None = None
    diffusion_size: int = 512
    timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS
    prompt_template: str = PROMPT_TEMPLATE
    #: The [state] word(s) of the MapDiff prompt (default "damage", ours). Commas make an ensemble
    #: (``"damage,defect,scratch"``): one prompt lists every state ("... with damage, defect,
    #: scratch") and M_diff_L weighs each state's words equally (:attr:`states`). The ensemble
    #: changes the prompt, hence the text conditioning of every UNet call, so it changes M_diff_V
    #: too (the UNet features are computed under that prompt), not only M_diff_L.
    state: str = "damage"
    attention: str = "*attn2"
    features: tuple[str, ...] = (DEFAULT_FEATURE_BLOCK,)
    scales: tuple[int, ...] = (2, 3)
    stride: int = 1
    noise_seed: int = 0
    mask: str = "none"
    #: AA-CLIP adapter checkpoint (from ``cfviz train-aaclip``) run at extraction, and its SHA-256
    #: (so that a store written with other adapters, or none, is refused); see aaclip_branch.py
    aaclip: str | None = None
    aaclip_sha256: str | None = None
    #: AA-CLIP's input side (position embeddings interpolated to its grid); ``None``: the
    #: checkpoint's, i.e. the released code's 518 px on ViT-L-14-336 (``cfviz.clip.aaclip.config``).
    aaclip_size: int | None = None
    #: AA-CLIP's class names in its prompts: ``"descriptive"`` (the released code's REAL_NAMES) or
    #: ``"plain"``; ``None``: the checkpoint's (descriptive for a new training).
    aaclip_names: str | None = None
    #: Window embeddings at extraction (the larger part of CLIP's time: 11.7x a plain encode,
    #: ``benchmarks/results/patchclip.md``). ``None`` (default, "auto"): a run computes them only when
    #: one of its methods or forms needs them (WinCLIP, or a PatchCLIP ``"mean"``/``"windows"`` map;
    #: :func:`resolve_clip_windows`), so the default CLIPFusion run is one CLIP forward pass per
    #: image, as the method's name and the paper's latency table suggest; outside a run (a bare
    #: ``ExtractionConfig``, or a store that does not record the setting) ``None`` means on.
    #: ``True`` always computes them; ``False`` never: the store then has no window embeddings and no
    #: WinCLIP outputs, so only PatchCLIP with ``scoring.patchclip_language`` and ``patchclip_visual``
    #: both ``"patches"`` can be scored (checked by :meth:`RunSpec.validate`, before anything runs).
    clip_windows: bool | None = None
    #: The object word(s) of a category in both prompts (CLIP's ensemble and MapDiff's
    #: "a close-up cropped png photo of a [object] with [state]"): ``"readable"`` (default: MVTec-AD
    #: and VisA categories by readable names, VisA ``pcb1`` -> "printed circuit board",
    #: ``chewinggum`` -> "chewing gum"; :mod:`cfviz.clip.object_names`, from AA-CLIP's released class
    #: names) or ``"folder"`` (the folder name, underscores as spaces: stores written before the
    #: setting). It changes the prompts, so it is part of the store's identity.
    object_names: str = "readable"
    #: WinCLIP's text anchors: the mean of unit-normalised prompt embeddings (``"normalized"``,
    #: ours: every prompt weighs the same) or of the raw ones (``"raw"``, as anomalib's WinCLIP
    #: does). Changes WinCLIP's stored zero-shot maps and scores (PatchCLIP keeps normalised ones).
    winclip_prompts: str = "normalized"
    #: Words whose cross-attention is recorded and averaged into M_diff_L: ``"state"`` (default; the
    #: paper's M_diff_L reads the [state] token, e.g. "damage"), ``"object"`` (the category's
    #: object words as ``object_names`` writes them, e.g. "metal nut", "printed circuit board") or
    #: ``"all"`` (every word of the prompt); stop words are left out.
    #: Ours to vary; changes only the stored attention (``attn/*``).
    language_tokens: str = "state"
    #: Tokens whose cross-attention is stored: ``"language"`` (default: the ``language_tokens``
    #: words only) or ``"all"``: those, then every token of the prompt from ``"<start>"`` to
    #: ``"<end>"`` (per-word figures, the explorer's token menu); M_diff_L still reads the
    #: language words. See :mod:`cfviz.evaluation.prompt_tokens`.
    tokens: str = "language"
    #: Diffusion noise at a timestep (ours; the paper does not say): ``"shared"`` (default, one
    #: draw seeded by ``(noise_seed, t)`` for every image) or ``"per-image"`` (seeded by
    #: ``(noise_seed, t, image id)``: each image its own draw, still independent of batch and
    #: shard). See :func:`cfviz.diffusion.forward.noise_seed`.
    noise: str = "shared"
    #: Noise draws averaged per timestep (default 1, ours): each draw is one more UNet call per
    #: timestep; the recorded attention and features are averaged over draws before they are
    #: stored, so the store keeps one step per timestep.
    noise_draws: int = 1
    #: MapDiff's UNet calls (ours): ``False`` (default) one call per timestep (and noise draw);
    #: ``True`` every timestep of a batch in one call (the batch repeated along the rows); an int
    #: ``N``: calls of at most ``N`` rows (:mod:`cfviz.diffusion.batched`). Fewer, larger calls pay
    #: on a GPU; on a CPU they do not (``benchmarks/results/timestep_batching.md``). Other kernels
    #: move the last bits, so it is part of the store's identity. SD 1.x/2.x inpainting only.
    batch_timesteps: bool | int = False

    def __post_init__(self) -> None:
        if self.clip_size is not None:
            check_int(self.clip_size, "extraction.clip_size", minimum=1,
                      why=" (the CLIP input side; leave it unset for the model's own size)")
        if not _is_int(self.diffusion_size) or self.diffusion_size < VAE_FACTOR or self.diffusion_size % VAE_FACTOR:
            near = ""
            if _is_int(self.diffusion_size) and self.diffusion_size > VAE_FACTOR:
                lo = self.diffusion_size // VAE_FACTOR * VAE_FACTOR
                near = f"; e.g. {lo} or {lo + VAE_FACTOR}"
            raise ConfigError(f"{{extraction.diffusion_size}} must be a positive multiple of {VAE_FACTOR} (the "
                              f"VAE downsamples by {VAE_FACTOR}), got {self.diffusion_size!r}{near}",
                              "extraction.diffusion_size")
        check_ints(self.timesteps, "extraction.timesteps", minimum=0, maximum=NUM_TRAIN_TIMESTEPS,
                   what="diffusion timesteps")
        if len(set(self.timesteps)) != len(self.timesteps):
            raise ConfigError(f"{{extraction.timesteps}} lists a timestep twice: {list(self.timesteps)}",
                              "extraction.timesteps")
        if not isinstance(self.state, str) or not self.state_tokens:
            raise ConfigError(f"{{extraction.state}} {self.state!r} has no word left once {', '.join(STOP_WORDS)} "
                              "are dropped; give the defect word(s) of the MapDiff prompt, e.g. 'damage'",
                              "extraction.state")
        if not isinstance(self.prompt_template, str) or "{state}" not in self.prompt_template:
            raise ConfigError("{extraction.prompt_template} must contain {state} (and usually {object}), got "
                              f"{self.prompt_template!r}", "extraction.prompt_template")
        if isinstance(self.features, (str, bytes)) or not all(isinstance(f, str) and f for f in self.features):
            raise ConfigError(f"{{extraction.features}} must be a list of UNet block names such as 'up_blocks.1', "
                              f"got {self.features!r}", "extraction.features")
        check_ints(self.scales, "extraction.scales", minimum=1, what="window sizes (in patches)")
        check_int(self.stride, "extraction.stride", minimum=1)
        check_int(self.noise_seed, "extraction.noise_seed", minimum=0)
        check_choice(self.mask, "extraction.mask", INPAINT_MASKS)
        check_choice(self.winclip_prompts, "extraction.winclip_prompts", PROMPT_AVERAGES)
        check_choice(self.object_names, "extraction.object_names", OBJECT_NAME_MODES)
        if self.aaclip_size is not None:
            check_int(self.aaclip_size, "extraction.aaclip_size", minimum=1,
                      why=" (AA-CLIP's input side, a multiple of the CLIP's patch size; unset: the checkpoint's)")
        if self.aaclip_names is not None:
            check_choice(self.aaclip_names, "extraction.aaclip_names", AACLIP_NAMES)
        if self.clip_windows is not None and not isinstance(self.clip_windows, bool):
            raise ConfigError(f"{{extraction.clip_windows}} must be True, False or None (auto: only when a method "
                              f"needs them), got {self.clip_windows!r}", "extraction.clip_windows")
        check_choice(self.language_tokens, "extraction.language_tokens", LANGUAGE_TOKENS)
        check_choice(self.tokens, "extraction.tokens", TOKEN_MODES)
        check_choice(self.noise, "extraction.noise", NOISE_MODES)
        check_int(self.noise_draws, "extraction.noise_draws", minimum=1,
                  why=" (noise draws averaged per timestep; each is one more UNet call)")
        if not (isinstance(self.batch_timesteps, bool) or (_is_int(self.batch_timesteps) and self.batch_timesteps >= 1)):
            raise ConfigError("{extraction.batch_timesteps} must be off (one UNet call per timestep), on (one call per "
                              f"batch) or a number of UNet rows per call >= 1, got {self.batch_timesteps!r}",
                              "extraction.batch_timesteps")

    @property
    def states(self) -> list[list[str]]:
        """The states of ``state``, each a list of recorded words: commas separate an ensemble.

        ``"crack damage"`` is one state of two words; ``"damage,defect,scratch"`` an ensemble of
        three states, written into one prompt (:func:`cfviz.diffusion.forward.state_phrase`),
        whose M_diff_L weighs each state equally (:func:`cfviz.diffusion.mapdiff.state_groups`).
        The prompt conditions every UNet call, so an ensemble also changes the stored features and
        with them M_diff_V.

        >>> ExtractionConfig(state="crack damage,scratch").states
        [['crack', 'damage'], ['scratch']]
        """
        groups = [[w for w in part.split() if w.lower() not in STOP_WORDS] for part in str(self.state).split(",")]
        return [g for g in groups if g]

    @property
    def state_tokens(self) -> list[str]:
        """Words of ``state`` whose cross-attention is recorded (each once, in order)."""
        return list(dict.fromkeys(w for g in self.states for w in g))

    def tokens_for(self, category: str) -> list[str]:
        """The words whose attention is recorded for images of ``category`` (``language_tokens``).

        >>> ExtractionConfig(language_tokens="object").tokens_for("metal_nut")
        ['metal', 'nut']
        >>> ExtractionConfig(language_tokens="all").tokens_for("bottle")
        ['close-up', 'cropped', 'png', 'photo', 'bottle', 'damage']
        >>> ExtractionConfig(language_tokens="object").tokens_for("pcb1")
        ['printed', 'circuit', 'board']
        """
        if self.language_tokens == "state":
            return self.state_tokens
        words = self.object_name(category).split()
        if self.language_tokens == "all":
            from cfviz.diffusion.forward import build_prompt

            words = build_prompt(" ".join(words), self.state, self.prompt_template).replace(",", " ").split()
        return list(dict.fromkeys(w for w in words if w.lower() not in STOP_WORDS))

    def object_name(self, category: str) -> str:
        """The object word(s) of ``category`` in the prompts (``object_names``).

        >>> ExtractionConfig().object_name("chewinggum"), ExtractionConfig(object_names="folder").object_name("chewinggum")
        ('chewing gum', 'chewinggum')
        """
        return object_name(category, self.object_names)

    @property
    def finest_attention(self) -> int:
        """Side of the finest cross-attention maps: the latent size, ``diffusion_size / 8``."""
        return self.diffusion_size // VAE_FACTOR

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.aaclip is None:  # stores written before AA-CLIP existed keep matching
            out.pop("aaclip"), out.pop("aaclip_sha256")
        for name in _LATER_FIELDS:  # settings added later: left out at their default, so older stores match
            if out[name] == _LATER_FIELDS[name]:
                out.pop(name)
        if out.get("clip_windows", False) is None:  # unresolved auto (no run): windows on, as an older store
            out.pop("clip_windows")
        return out


#: ExtractionConfig fields added after stores were first written, with their defaults: left out of
#: the store's identity at the default, so a store written before they existed still matches.
_LATER_FIELDS: dict[str, Any] = {"winclip_prompts": "normalized", "language_tokens": "state", "tokens": "language",
                                 "aaclip_size": None, "aaclip_names": None, "clip_windows": True, "object_names": "folder",
                                 "noise": "shared", "noise_draws": 1, "batch_timesteps": False}


def clip_input_size(choice: ModelChoice) -> int:
    """The input side of the CLIP a :class:`ModelChoice` builds, read from its configuration (no model built).

    The tiny CLIP takes the geometry of ``clip_arch`` (:func:`cfviz.models.clip.tiny_geometry`).

    >>> clip_input_size(ModelChoice()), clip_input_size(ModelChoice(clip="tiny", clip_arch="ViT-L-14-336"))
    (240, 336)
    """
    from cfviz.models.clip import TINY_CLIP, tiny_geometry

    if choice.clip == "tiny" or choice.clip_arch == TINY_CLIP:
        return tiny_geometry(choice.clip_arch)[0]  # the tiny arch itself: its own
    from cfviz.models.clip_catalog import get_model_config  # open_clip's files: no torch import

    size = ((get_model_config(choice.clip_arch) or {}).get("vision_cfg") or {}).get("image_size")
    size = size[0] if isinstance(size, (list, tuple)) else size
    if not _is_int(size):
        raise ConfigError(f"{{models.clip_arch}} {choice.clip_arch!r} has no ViT input size in its open_clip "
                          "configuration; choose a ViT architecture", "models.clip_arch")
    return int(size)


def resolve_clip_size(spec: RunSpec) -> RunSpec:
    """``spec`` with ``extraction.clip_size`` set to the CLIP's input size (the store records it).

    ``None`` becomes the model's size; a given size that is not the model's is refused with a
    :class:`~cfviz.errors.ConfigError` naming ``extraction.clip_size`` (before any model loads).

    >>> resolve_clip_size(RunSpec(models=ModelChoice(clip_arch="ViT-B-32"))).extraction.clip_size
    224
    >>> resolve_clip_size(RunSpec(models=ModelChoice(clip_arch="ViT-B-32"), extraction=ExtractionConfig(clip_size=240)))
    Traceback (most recent call last):
    ...
    cfviz.errors.ConfigError: models.clip 'tiny' like models.clip_arch 'ViT-B-32' takes 224 px images, but extraction.clip_size is 240; set extraction.clip_size to 224 or leave it unset
    """
    from dataclasses import replace

    size = clip_input_size(spec.models)
    given = spec.extraction.clip_size
    if given is not None and given != size:
        which = (f"{{models.clip}} 'tiny' like {{models.clip_arch}} {spec.models.clip_arch!r}"
                 if spec.models.clip == "tiny" else f"{{models.clip_arch}} {spec.models.clip_arch!r}")
        raise ConfigError(f"{which} takes {size} px images, but {{extraction.clip_size}} is {given}; set "
                          f"{{extraction.clip_size}} to {size} or leave it unset", "extraction.clip_size",
                          mentions=("models.clip", "models.clip_arch"))
    if given == size:
        return spec
    return replace(spec, extraction=replace(spec.extraction, clip_size=size))


def resolve_clip_windows(spec: RunSpec, stored: bool | None = None) -> RunSpec:
    """``spec`` with ``extraction.clip_windows`` decided: auto (``None``) becomes whether a method needs windows.

    On when :meth:`RunSpec.window_needs` lists anything (WinCLIP, a PatchCLIP ``"mean"`` or
    ``"windows"`` map), or when ``stored`` (the value of the store the run will use, if it exists)
    is on: a store that already holds windows is reused rather than refused; off otherwise. A
    given ``True``/``False`` is kept. The store records the resolved value (off only: on is what
    stores written before the setting hold) and ``run.json`` the resolved spec.

    >>> resolve_clip_windows(RunSpec()).extraction.clip_windows
    False
    >>> resolve_clip_windows(RunSpec(methods=("clipfusion", "winclip"))).extraction.clip_windows
    True
    """
    from dataclasses import replace

    if spec.extraction.clip_windows is not None:
        return spec
    return replace(spec, extraction=replace(spec.extraction, clip_windows=bool(spec.window_needs()) or bool(stored)))


#: A pair M_diff_V compares: (query timestep, query block, reference timestep, reference block).
Pair = tuple[int, str, int, str]


def default_visual_timestep(timesteps: Sequence[Any]) -> Any:
    """The middle of the captured timesteps in order of value (not of the list): 261 of 50, 400, 261.

    >>> default_visual_timestep([50, 400, 261]), default_visual_timestep([100, 400])
    (261, 400)
    """
    ordered = sorted(timesteps, key=float)
    return ordered[len(ordered) // 2]


def resolved_pair(scoring: ScoringConfig, extraction: ExtractionConfig) -> Pair:
    """The (query t, block, reference t, block) that M_diff_V uses under ``scoring`` (defaults filled in).

    The one home of the pair's defaults: the query timestep is the middle captured one, the
    reference side is matched with the query unless given; several blocks stay comma-separated.

    >>> resolved_pair(ScoringConfig(), ExtractionConfig())
    (261, 'up_blocks.1', 261, 'up_blocks.1')
    """
    t_q = scoring.visual_timestep if scoring.visual_timestep is not None else \
        default_visual_timestep(extraction.timesteps)
    t_r = scoring.reference_timestep if scoring.reference_timestep is not None else t_q
    return (whole_timestep(t_q), scoring.visual_block, whole_timestep(t_r),
            scoring.reference_block or scoring.visual_block)


def whole_timestep(t: Any) -> int:
    """A timestep as the int it names (a store may give back ``261.0``)."""
    return int(round(float(t)))


@dataclass(frozen=True)
class ScoringConfig:
    """How maps and scores are made from the store (cheap; sweep freely).

    Attributes
    ----------
    alpha_seg, alpha_cls:
        CLIP-branch weights for segmentation (0.25) and classification (0.75), paper eqs. 4 and 9.
    normalization:
        How maps are made comparable before fusion (see :func:`cfviz.fusion.normalize_maps`):
        ``"dataset"`` (default, ours: min-max over the category's test images, anomalous ones
        included: transductive, as AA-CLIP's released evaluation), ``"inductive"`` (no other test
        image is used: k-shot, each language map min-max scaled by the range of the same map on the
        k normal references and each visual map by its fixed range (distances: M_clip_V in [0, 1],
        M_diff_V in [0, 2]); zero-shot, each map by its own min and max; image scores are not
        rescaled), ``"image"`` (min-max per map; image scores stay min-max over the category),
        ``"none"``.
    score_rule, topk:
        How a map is reduced to one number (see :func:`cfviz.fusion.image_scores`): ``"max"``
        (default), ``"topk_mean"`` (mean of the top ``topk`` fraction of pixels) or ``"mean"``.
        Which map, and whether a global (CLS) score is used instead, is ``image_score``.
    image_score:
        The one image-score rule of every method (:func:`cfviz.fusion.method_image_scores`):
        ``"eq9"`` (default: the paper's classification fusion, eq. 9 = eq. 4's map fusion with
        ``alpha_cls``, reduced by ``score_rule``; a one-branch method's own map; the reduction
        is ours, the paper does not say), ``"map"`` (the final segmentation map reduced by
        ``score_rule``), ``"cls"`` (the global image score alone: PatchCLIP's CLS score, WinCLIP's
        zero-shot image score, AA-CLIP's detection score; MapDiff has none and keeps its map's), or
        ``"own"`` (each method's favourite, cfviz's rule before issue 20: CLIPFusion
        ``alpha_cls * s_clip + (1 - alpha_cls) * s_diff``; PatchCLIP its CLS score, k-shot the
        mean with M_clip_V's max; WinCLIP(+) and AA-CLIP as released; MapDiff its map's score).
    sigma, smoothing:
        Gaussian smoothing (pixels of the ``eval_size`` grid) of the final maps; 0 = none.
        ``smoothing="shared"`` (default: one rule for all) smooths every method's final map alike,
        WinCLIP's and AA-CLIP's included (AA-CLIP keeps its released blur on the patch grid too);
        ``"own"``: each method's favourite: ``sigma`` on CLIPFusion/PatchCLIP/MapDiff, WinCLIP
        unsmoothed as published, AA-CLIP its released blur only. Default 4: PatchCore's released
        code (also in caoyunkang's WinCLIP, commented out there).
    eval_size:
        Grid on which maps and masks are compared (masks nearest-neighbour, maps bilinear):
        256 (default, ours) or ``"native"``: maps are fused on the 256 grid, then each image's
        final map is resized to its own mask's size for the pixel metrics, which pool the pixels
        of images of any sizes (VisA's differ; :mod:`cfviz.metrics.native`). ``sigma`` stays in
        pixels of the 256 grid.
    language_steps:
        Timesteps whose cross-attention feeds M_diff_L (default: all captured).
    language_min_resolution:
        Coarsest cross-attention resolution used in M_diff_L (ours; :mod:`cfviz.capture.daam` says
        what DAAM drops).
    language_layers:
        Which recorded cross-attention layers feed M_diff_L: ``None`` (default, ours: every
        cross-attention layer, then ``language_min_resolution`` drops the coarse ones) or glob
        patterns over layer names, comma-separated (``"up_blocks.*"``, ``"up1.attn0,up2.*"``).
        The store holds every layer, so this is a scoring setting.
    visual_timestep, visual_block:
        Query timestep and block of M_diff_V (default: the middle of the captured timesteps
        sorted, e.g. 261 of 50, 261, 400, and ``up_blocks.1``, from DIFT; the run names the pair it
        used in ``run.json`` and ``summary.md``, :func:`cfviz.evaluation.scoring.visual_pair`). Several stored blocks, comma-separated (``"up_blocks.1,up_blocks.2"``), are
        pooled by ``visual_pooling``.
    reference_timestep, reference_block:
        Reference side of M_diff_V; ``None`` = matched with the query (the paper's default). With
        several query blocks, as many reference blocks (comma-separated), or ``None``.
    visual_pooling:
        How several M_diff_V blocks of different widths are pooled
        (:func:`cfviz.diffusion.mapdiff.pooled_visual_map`): ``"mean"`` (default, ours: the mean
        of the per-block distance maps on the finest grid) or ``"concat"`` (per-block normalised
        features concatenated on the finest grid, one nearest-neighbour search: PatchCore's
        released code). No effect with one block.
    clip_branch:
        Which stored CLIP language map feeds CLIPFusion/PatchCLIP: ``"patchclip"`` (default) or
        ``"aaclip"`` (needs a store extracted with ``ExtractionConfig.aaclip``).
    aaclip_upsample:
        How AA-CLIP's patch-grid map becomes a pixel map (method ``aaclip`` and
        ``clip_branch="aaclip"``; its image score takes the maximum of that map):
        ``"align_corners"`` (default, the released code: bilinear, ``align_corners=True``) or
        ``"half_pixel"`` (ours: ``align_corners=False``, as cfviz's other maps).
    patchclip_language:
        PatchCLIP's language map ``M_clip_L`` (for clipfusion and patchclip): ``"patches"``
        (default: the patch-token class map of one CLIP forward pass, what the method's name and
        the paper's latency argument (Table 7: no multi-scale window passes) point to), ``"mean"``
        (ours: mean of the patch-token map and WinCLIP's per-scale window maps, 11.7x the CLIP
        cost) or ``"windows"`` (window maps only, as WinCLIP's language map). The two window forms
        need ``extraction.clip_windows`` (auto turns it on for them). Read from the store: no
        model runs.
    patchclip_visual:
        PatchCLIP's visual map ``M_clip_V`` (k-shot): ``"patches"`` (default: nearest-neighbour
        association of the patch embeddings, one forward pass per image), ``"mean"`` (WinCLIP+'s
        few-shot map: mean of the patch and window association maps) or ``"windows"``. From
        stored embeddings: no model runs.
    """

    alpha_seg: float = ALPHA_SEGMENTATION
    alpha_cls: float = ALPHA_CLASSIFICATION
    normalization: str = "dataset"
    score_rule: str = "max"
    topk: float = 0.01
    sigma: float = 4.0
    eval_size: int | str = 256
    language_steps: tuple[int, ...] | None = None
    language_min_resolution: int = DEFAULT_MIN_RESOLUTION
    visual_timestep: int | None = None
    visual_block: str = DEFAULT_FEATURE_BLOCK
    reference_timestep: int | None = None
    reference_block: str | None = None
    clip_branch: str = "patchclip"
    patchclip_language: str = "patches"
    patchclip_visual: str = "patches"
    language_layers: str | None = None
    visual_pooling: str = "mean"
    aaclip_upsample: str = "align_corners"
    # the one comparison rule (issue 20): applied to every method alike
    smoothing: str = "shared"
    image_score: str = "eq9"

    def __post_init__(self) -> None:
        check_choice(self.smoothing, "scoring.smoothing", SMOOTHINGS)
        check_choice(self.image_score, "scoring.image_score", IMAGE_SCORES)
        check_fraction(self.alpha_seg, "scoring.alpha_seg", why=" (the CLIP branch's weight in the fused map)")
        check_fraction(self.alpha_cls, "scoring.alpha_cls", why=" (the CLIP branch's weight in the image score)")
        check_choice(self.normalization, "scoring.normalization", NORMALIZATIONS)
        check_choice(self.score_rule, "scoring.score_rule", SCORE_RULES)
        check_fraction(self.topk, "scoring.topk", why=" (the fraction of pixels averaged by 'topk_mean')",
                       open_low=True)
        ok = isinstance(self.sigma, numbers.Real) and not isinstance(self.sigma, bool) and math.isfinite(self.sigma)
        if not ok or self.sigma < 0:
            raise ConfigError(f"{{scoring.sigma}} must be >= 0 (Gaussian smoothing in pixels; 0 = none), "
                              f"got {self.sigma!r}", "scoring.sigma")
        if self.eval_size != NATIVE:
            check_int(self.eval_size, "scoring.eval_size", minimum=8,
                      why=f" (the side of the grid on which maps and masks are compared) or {NATIVE!r}")
        # timesteps read back from a store may be floats (100.0): any whole number is a timestep
        steps = [("scoring.language_steps", t) for t in (self.language_steps or ())]
        if self.language_steps is not None and (isinstance(self.language_steps, (str, bytes))
                                                or not isinstance(self.language_steps, Sequence)):
            raise ConfigError(f"{{scoring.language_steps}} must be a list of timesteps or None, got "
                              f"{self.language_steps!r}", "scoring.language_steps")
        steps += [("scoring.visual_timestep", self.visual_timestep), ("scoring.reference_timestep",
                                                                         self.reference_timestep)]
        for path, t in steps:
            whole = isinstance(t, numbers.Real) and not isinstance(t, bool) and math.isfinite(t) and t == int(t)
            if t is not None and not (whole and 0 <= t < NUM_TRAIN_TIMESTEPS):
                raise ConfigError(f"{{{path}}} must be a diffusion timestep in [0, {NUM_TRAIN_TIMESTEPS}), got {t!r}",
                                  path)
        check_int(self.language_min_resolution, "scoring.language_min_resolution", minimum=1)
        for path, b in (("scoring.visual_block", self.visual_block), ("scoring.reference_block", self.reference_block)):
            if b is not None and not (isinstance(b, str) and b):
                raise ConfigError(f"{{{path}}} must be a UNet block name such as 'up_blocks.1', got {b!r}", path)
        check_choice(self.clip_branch, "scoring.clip_branch", CLIP_BRANCHES)
        check_choice(self.aaclip_upsample, "scoring.aaclip_upsample", AACLIP_UPSAMPLE)
        check_choice(self.patchclip_language, "scoring.patchclip_language", MAP_SOURCES)
        check_choice(self.patchclip_visual, "scoring.patchclip_visual", MAP_SOURCES)
        if self.language_layers is not None and not (isinstance(self.language_layers, str)
                                                     and self.language_layers_list):
            raise ConfigError("{scoring.language_layers} must be glob patterns over cross-attention layer names, "
                              f"comma-separated (e.g. 'up_blocks.*'), or None for all; got {self.language_layers!r}",
                              "scoring.language_layers")
        check_choice(self.visual_pooling, "scoring.visual_pooling", VISUAL_POOLINGS)
        if self.reference_block is not None and len(self.reference_blocks) != len(self.visual_blocks):
            raise ConfigError(f"{{scoring.reference_block}} names {len(self.reference_blocks)} blocks but "
                              f"{{scoring.visual_block}} {len(self.visual_blocks)}; give one reference block per "
                              "query block, or none (matched)", "scoring.reference_block",
                              mentions=("scoring.visual_block",))

    @property
    def grid(self) -> int:
        """Side of the grid maps are fused on: ``eval_size``, or 256 with ``eval_size="native"``.

        >>> ScoringConfig(eval_size="native").grid, ScoringConfig(eval_size=64).grid
        (256, 64)
        """
        return NATIVE_WORKING_GRID if self.eval_size == NATIVE else int(self.eval_size)

    @property
    def language_layers_list(self) -> list[str] | None:
        """``language_layers`` as a list of patterns (``None``: every layer)."""
        if self.language_layers is None:
            return None
        return [p.strip() for p in str(self.language_layers).split(",") if p.strip()]

    @property
    def visual_blocks(self) -> list[str]:
        """The query blocks of M_diff_V (``visual_block`` split at commas).

        >>> ScoringConfig(visual_block="up_blocks.1, up_blocks.2").visual_blocks
        ['up_blocks.1', 'up_blocks.2']
        """
        return [b.strip() for b in str(self.visual_block).split(",") if b.strip()]

    @property
    def reference_blocks(self) -> list[str]:
        """The reference blocks of M_diff_V: ``reference_block`` split at commas, or the query blocks."""
        if self.reference_block is None:
            return self.visual_blocks
        return [b.strip() for b in str(self.reference_block).split(",") if b.strip()]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunSpec:
    """One evaluation: data set, methods, shots and seeds, plus the three configurations.

    ``dataset_options`` go to the data set reader (:func:`cfviz.data.open_dataset`), e.g.
    ``{"missing_masks": "warn"}`` for a folder whose anomalous images lack masks, or the texture
    generator's sizes (``{"n_train": 2, "image_size": 128}``) for a smaller embedded set (give
    such a set its own ``root``: the default folder is regenerated to match what is asked).

    ``store_form`` (ours): ``"full"`` (default) keeps every captured tensor; ``"compact"`` replaces
    the test images' UNet features by M_diff_V maps for this run's shots, seeds and the
    (timestep, block) matching grid once they are extracted, 10x or more smaller for three
    blocks, the same results (:mod:`cfviz.evaluation.compact`). Part of the store's identity.
    """

    dataset: str = "textures"
    root: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    categories: tuple[str, ...] | None = None
    methods: tuple[str, ...] = ("clipfusion",)
    shots: tuple[int, ...] = (0,)
    seeds: tuple[int, ...] = (0,)
    models: ModelChoice = field(default_factory=ModelChoice)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    batch_size: int = 4
    store_form: str = "full"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> RunSpec:
        """Check every setting and how they fit together; return ``self``.

        Raises :class:`~cfviz.errors.ConfigError` naming the setting (``field`` is its path, e.g.
        ``"scoring.alpha_seg"``). Paths, devices and model names are checked by
        :func:`cfviz.evaluation.preflight.preflight`, which calls this first.

        >>> RunSpec(shots=(-1,))
        Traceback (most recent call last):
        ...
        cfviz.errors.ConfigError: shots must be integers >= 0 (k normal reference images per category), got -1
        """
        from cfviz.data import DATASET_KINDS

        for path, value, kind in (("models", self.models, ModelChoice),
                                  ("extraction", self.extraction, ExtractionConfig),
                                  ("scoring", self.scoring, ScoringConfig)):
            if not isinstance(value, kind):
                raise ConfigError(f"{{{path}}} must be a {kind.__name__}, got {type(value).__name__}", path)
        check_choice(self.dataset, "dataset", sorted(DATASET_KINDS))
        if self.root is not None and not isinstance(self.root, str):
            self.root = str(self.root)  # a Path is fine
        if not isinstance(self.dataset_options, dict):
            raise ConfigError(f"{{dataset_options}} must be a dict of reader options, got {self.dataset_options!r}",
                              "dataset_options")
        if self.categories is not None and (isinstance(self.categories, str) or not self.categories
                                            or not all(isinstance(c, str) and c for c in self.categories)):
            raise ConfigError(f"{{categories}} must be a non-empty tuple of category names (or None for all), "
                              f"got {self.categories!r}", "categories")
        if isinstance(self.methods, str) or not self.methods:
            raise ConfigError(f"{{methods}} must be a non-empty tuple of methods from {', '.join(METHODS)}, "
                              f"got {self.methods!r}", "methods")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"unknown methods {bad} in {{methods}}; choose from {', '.join(METHODS)}", "methods")
        check_ints(self.shots, "shots", minimum=0, why=" (k normal reference images per category)")
        check_ints(self.seeds, "seeds", minimum=0, why=" (seeds of the k-shot reference draws)")
        check_int(self.batch_size, "batch_size", minimum=1, why=" (images per model call)")
        check_choice(self.store_form, "store_form", STORE_FORMS)
        self._check_combination()
        return self

    def window_needs(self) -> list[str]:
        """What in this run needs CLIP's window embeddings (settings in ``{path}`` form); empty: nothing.

        >>> RunSpec().window_needs(), RunSpec(methods=("clipfusion", "winclip")).window_needs()
        ([], ["{methods} 'winclip'"])
        """
        s, methods = self.scoring, set(self.methods)
        need = []
        if "winclip" in methods:
            need.append("{methods} 'winclip'")
        patchclip = methods & {"patchclip"} or (methods & {"clipfusion"} and s.clip_branch == "patchclip")
        if patchclip and s.patchclip_language != "patches":
            need.append(f"{{scoring.patchclip_language}} {s.patchclip_language!r}")
        if methods & {"patchclip", "clipfusion"} and max(self.shots) > 0 and s.patchclip_visual != "patches":
            need.append(f"{{scoring.patchclip_visual}} {s.patchclip_visual!r}")
        return need

    def _check_combination(self) -> None:
        """Settings that are valid alone but not together (each would fail only after extraction)."""
        e, s, methods = self.extraction, self.scoring, set(self.methods)
        if methods & set(DIFFUSION_METHODS) and e.finest_attention < s.language_min_resolution:
            need = s.language_min_resolution * VAE_FACTOR
            raise ConfigError(
                f"{{extraction.diffusion_size}} {e.diffusion_size} gives cross-attention maps of at most "
                f"{e.finest_attention}x{e.finest_attention}, all coarser than {{scoring.language_min_resolution}} "
                f"{s.language_min_resolution}, so MapDiff's language map would be empty; raise "
                f"{{extraction.diffusion_size}} to {need} or more, or lower {{scoring.language_min_resolution}} to "
                f"{max(e.finest_attention, 1)}", "extraction.diffusion_size",
                mentions=("scoring.language_min_resolution",))
        if s.language_steps is not None and methods & set(DIFFUSION_METHODS):
            bad = [t for t in s.language_steps if t not in e.timesteps]
            if bad:
                raise ConfigError(f"{{scoring.language_steps}} {bad} are not among the captured "
                                  f"{{extraction.timesteps}} {list(e.timesteps)}", "scoring.language_steps",
                                  mentions=("extraction.timesteps",))
        if methods & set(DIFFUSION_METHODS) and max(self.shots) > 0:
            for path, t in (("scoring.visual_timestep", s.visual_timestep),
                            ("scoring.reference_timestep", s.reference_timestep)):
                if t is not None and t not in e.timesteps:
                    raise ConfigError(f"{{{path}}} {t} is not among the captured {{extraction.timesteps}} "
                                      f"{list(e.timesteps)}", path, mentions=("extraction.timesteps",))
            for path, blocks in (("scoring.visual_block", s.visual_blocks),
                                 ("scoring.reference_block", s.reference_blocks if s.reference_block else [])):
                for b in blocks:
                    if b not in e.features:
                        raise ConfigError(f"{{{path}}} {b!r} is not among the stored {{extraction.features}} "
                                          f"{list(e.features)}; add it there (k-shot MapDiff compares its "
                                          "features)", path, mentions=("extraction.features",))
        if s.normalization == "reference" and methods & set(NORMALIZED_METHODS):
            raise ConfigError("{scoring.normalization} 'reference' is not available in the evaluation runner (it "
                              "keeps no maps of normal images to standardise by); use 'dataset' (the default), "
                              "'inductive' (the references' range, no other test image), 'image' or 'none'",
                              "scoring.normalization")
        need = self.window_needs() if e.clip_windows is False else []  # off: every method must do without windows
        if need:
            raise ConfigError(f"{{extraction.clip_windows}} off skips CLIP's window embeddings, but {' and '.join(need)} "
                              "need them; turn {extraction.clip_windows} on, or use {scoring.patchclip_language} and "
                              "{scoring.patchclip_visual} 'patches' without winclip", "extraction.clip_windows",
                              mentions=("methods", "scoring.patchclip_language", "scoring.patchclip_visual"))
        needs_aaclip = "aaclip" in methods or (s.clip_branch == "aaclip" and methods & {"clipfusion", "patchclip"})
        if needs_aaclip and not e.aaclip:
            raise ConfigError("{methods} 'aaclip' and {scoring.clip_branch} 'aaclip' need {extraction.aaclip}: the "
                              "adapters written by `cfviz train-aaclip` (OUT/aaclip.safetensors)", "extraction.aaclip",
                              mentions=("methods", "scoring.clip_branch"))
