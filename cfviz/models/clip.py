"""CLIP loaders: real open_clip weights, full-size random weights, and a tiny offline model.

All of them return a :class:`~cfviz.models.bundle.ClipBundle`. Weights are read with
safetensors, or with ``torch.load(weights_only=True)`` for ``.pt``/``.pth``/``.bin`` state
dicts; nothing is ever unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cfviz.errors import ConfigError, ModelUnavailableError, did_you_mean
from cfviz.models._config import model_config
from cfviz.models._seeding import check_seed, seeded
from cfviz.models.bundle import ClipBundle
from cfviz.models.info import make_info

#: The backbone of WinCLIP and CLIPFusion, and its default pretrained tag.
DEFAULT_CLIP = "ViT-B-16-plus-240"
DEFAULT_PRETRAINED = "laion400m_e32"
#: The tiny offline architecture (cfviz/models/configs/tiny_clip.json).
TINY_CLIP = "cfviz-tiny-clip"
#: Environment variable that replaces the default download with a local checkpoint file.
CHECKPOINT_ENV = "CFVIZ_CLIP_CHECKPOINT"

_CFVIZ_ARCHS = {TINY_CLIP: "tiny_clip"}
_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
#: Largest safetensors header accepted (the format caps it at 100 MB).
_MAX_HEADER = 100_000_000
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _fix(cache: str = "the Hugging Face cache (HF_HOME / HF_HUB_CACHE)") -> str:
    return (f"pass a local checkpoint file as pretrained=..., set {CHECKPOINT_ENV} to one, or run once with "
            f"network access so that {cache} holds it")


# ---------------------------------------------------------------------------------------------
# public loaders


def tiny_clip(seed: int = 0, device: Any = "cpu", dtype: Any = None, *, like: str | None = None) -> ClipBundle:
    """A tiny open_clip ``CLIP`` with seeded random weights, for tests and offline demos.

    Same input geometry as ``ViT-B-16-plus-240`` (240 px, 16 px patches, a 15x15 grid) and the
    same tokenizer, but width 64, 4 layers and a 32-d embedding, so it runs in milliseconds.
    Its outputs show that code runs, not how well a method works.

    ``like`` (an open_clip architecture) gives it that architecture's input size and patch size
    instead (``like="ViT-L-14-336"``: 336 px, 14 px patches, 24x24 grid; named
    ``cfviz-tiny-clip-336-p14``): the offline stand-in for a CLIP of another resolution. With
    ``like`` left out, or an architecture of the default geometry, it is the same model.

    >>> tiny_clip(like="ViT-B-32").image_size
    224

    >>> import torch
    >>> b = tiny_clip(seed=0)
    >>> b.model.encode_image(torch.zeros(2, 3, 240, 240)).shape
    torch.Size([2, 32])
    >>> b.tokenizer(["a photo of a scratch"]).shape
    torch.Size([1, 77])
    """
    size, patch = tiny_geometry(like)
    base = model_config(_CFVIZ_ARCHS[TINY_CLIP])["vision_cfg"]
    if (size, patch) == (base["image_size"], base["patch_size"]):
        return random_clip(TINY_CLIP, seed=seed, device=device, dtype=dtype)
    import torch
    from open_clip.model import CLIP
    from open_clip.tokenizer import SimpleTokenizer

    check_seed(seed)
    cfg = model_config(_CFVIZ_ARCHS[TINY_CLIP])
    cfg["vision_cfg"] = {**cfg["vision_cfg"], "image_size": size, "patch_size": patch}
    with seeded(seed):
        model = CLIP(**cfg)
    tokenizer = SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    return _make_bundle(model, tokenizer, name=f"{TINY_CLIP}-{size}-p{patch}", pretrained=None, weights="random",
                        seed=seed, mean=_OPENAI_MEAN, std=_OPENAI_STD, device=device,
                        dtype=torch.float32 if dtype is None else dtype, source="config")


def tiny_geometry(like: str | None = None) -> tuple[int, int]:
    """``(image_size, patch_size)`` of the tiny CLIP made ``like`` an architecture (default: 240, 16).

    Read from the architecture's configuration (no model is built).

    >>> tiny_geometry("ViT-L-14-336")
    (336, 14)
    """
    vision = model_config(_CFVIZ_ARCHS[TINY_CLIP])["vision_cfg"]
    if like is not None and like not in _CFVIZ_ARCHS and like != DEFAULT_CLIP:
        _check_arch_name(like)
        from cfviz.models.clip_catalog import get_model_config

        vision = (get_model_config(like) or {}).get("vision_cfg", {})
    size, patch = vision.get("image_size"), vision.get("patch_size")
    size = size[0] if isinstance(size, (list, tuple)) else size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    if not (isinstance(size, int) and isinstance(patch, int)):
        raise ConfigError(f"{like!r} has no ViT input size and patch size in its configuration; cfviz needs a ViT, "
                          f"e.g. {DEFAULT_CLIP!r}")
    return size, patch


def random_clip(name: str = DEFAULT_CLIP, seed: int = 0, *, device: Any = "cpu", dtype: Any = None) -> ClipBundle:
    """A full-size open_clip architecture with seeded random weights (no download).

    For shape, latency and memory studies. ``name`` is an open_clip model name or
    ``"cfviz-tiny-clip"``. The global random state is left untouched.

    Skipped in doctests: builds a 208M-parameter model.

    >>> b = random_clip("ViT-B-16-plus-240", seed=0)  # doctest: +SKIP
    >>> b.embed_dim, b.grid_size  # doctest: +SKIP
    (640, (15, 15))
    """
    import torch

    check_seed(seed)
    dtype = torch.float32 if dtype is None else dtype
    _check_arch_name(name)
    with seeded(seed):
        model, tokenizer, mean, std = _build_architecture(name)
    return _make_bundle(model, tokenizer, name=name, pretrained=None, weights="random", seed=seed,
                        mean=mean, std=std, device=device, dtype=dtype, source="config")


def load_clip(name: str = DEFAULT_CLIP, pretrained: str | os.PathLike[str] | None = DEFAULT_PRETRAINED, *,
              device: Any = "cpu", dtype: Any = None,
              cache_dir: str | os.PathLike[str] | None = None) -> ClipBundle:
    """Load CLIP with real weights: an open_clip pretrained tag or a local checkpoint file.

    Parameters
    ----------
    name:
        open_clip architecture name (``"ViT-B-16-plus-240"``), or ``"cfviz-tiny-clip"``.
    pretrained:
        An open_clip pretrained tag (``"laion400m_e32"``), fetched from the Hugging Face hub or
        its cache, or the path of a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` state dict.
        When ``name`` and ``pretrained`` are left at their defaults and ``CFVIZ_CLIP_CHECKPOINT``
        is set, that file is used instead of the download.
    device, dtype:
        Where to put the model and its parameter dtype (default ``torch.float32``).
    cache_dir:
        Hub cache folder (default: ``HF_HUB_CACHE`` / ``HF_HOME``); for tags that open_clip only
        publishes as a URL, the download folder (default ``~/.cache/clip``, open_clip's).

    Raises
    ------
    ModelUnavailableError
        Within seconds, with one sentence saying what was looked for and how to supply it, when
        the weights are neither on disk nor downloadable (``HF_HUB_OFFLINE``, no network), or
        when a checkpoint does not fit the architecture.

    Example
    -------
    Skipped in doctests: needs the weights or the network.

    >>> bundle = load_clip()  # doctest: +SKIP
    >>> bundle.grid_size  # doctest: +SKIP
    (15, 15)
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    if pretrained is None:
        raise ConfigError("pretrained=None asks for no weights; use random_clip(name, seed=...) for random "
                         "weights, or pass a pretrained tag or a checkpoint file")
    pretrained = os.fspath(pretrained)
    _check_arch_name(name)
    pretrained, from_env = checkpoint_override(name, pretrained)

    quick_gelu, mean, std, extra = False, None, None, {}
    if looks_like_file(pretrained):
        path, source = Path(pretrained).expanduser(), "local"
        origin = f" (from {CHECKPOINT_ENV})" if from_env else ""
        if not path.is_file():
            raise ModelUnavailableError(
                f"CLIP checkpoint file {path}{origin} does not exist; pass the path of a .safetensors or .pt "
                f"state-dict file as pretrained=..., set {CHECKPOINT_ENV} to one, or pass an open_clip "
                f"pretrained tag such as {DEFAULT_PRETRAINED!r} to download it")
        if path.suffix.lower() not in _SUFFIXES:
            raise ModelUnavailableError(f"CLIP checkpoint {path}{origin} has an unsupported suffix; cfviz reads "
                                        ".safetensors files and .pt/.pth/.bin state dicts")
        extra = {"checkpoint": str(path)}
    else:
        path, quick_gelu, mean, std, extra = _hub_checkpoint(name, pretrained, cache_dir)
        source = "hub" if "hub_repo" in extra else "url"
    state, metadata = read_state_dict(path)
    stored_name = metadata.get("cfviz_clip_name")
    if stored_name and stored_name != name:
        raise ModelUnavailableError(f"checkpoint {path} was saved from the {stored_name!r} architecture, not "
                                    f"{name!r}; pass name={stored_name!r}")
    with seeded(0):  # the architecture's random init is overwritten; seeding keeps global RNG intact
        model, tokenizer, arch_mean, arch_std = _build_architecture(name, quick_gelu=quick_gelu)
    _load_state(model, state, path=path, name=name)
    tag = pretrained if source != "local" else str(path)
    return _make_bundle(model, tokenizer, name=name, pretrained=tag, weights="pretrained", seed=None,
                        mean=tuple(mean or arch_mean), std=tuple(std or arch_std), device=device,
                        dtype=dtype, source=source, extra=extra)


def save_clip_checkpoint(bundle: ClipBundle, path: str | os.PathLike[str]) -> Path:
    """Save a bundle's weights as safetensors (atomically), recording the architecture name.

    ``load_clip(bundle.name, pretrained=path)`` loads it back.

    >>> import tempfile, pathlib
    >>> p = save_clip_checkpoint(tiny_clip(seed=0), pathlib.Path(tempfile.mkdtemp()) / "tiny.safetensors")
    >>> load_clip("cfviz-tiny-clip", pretrained=p).weights
    'pretrained'
    """
    from cfviz.utils.io import save_safetensors

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_clip_checkpoint writes safetensors; give {path} the .safetensors suffix")
    state = {k: v.clone() for k, v in bundle.model.state_dict().items()}  # clones: no shared storage
    return save_safetensors(path, state, metadata={"format": "pt", "cfviz_clip_name": bundle.name})


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)``; never pickle.

    Returns ``(state_dict, metadata)``; metadata is the safetensors header metadata (empty for
    torch files). A ``{"state_dict": ...}`` wrapper and a ``module.`` prefix are removed.
    """
    import torch

    path = Path(path)
    metadata: dict[str, str] = {}
    problem = checkpoint_problem(path)
    if problem:
        raise ModelUnavailableError(f"checkpoint {path} {problem}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as fh:
                metadata = dict(fh.metadata() or {})
            obj: Any = load_file(str(path))
        except Exception as exc:  # SafetensorError (truncated data, bad offsets), OSError
            text = " ".join(str(exc).split())[:200]
            detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            raise ModelUnavailableError(f"checkpoint {path} cannot be read as safetensors ({detail}); "
                                        "re-save the weights with safetensors.torch.save_file") from None
    elif path.suffix in _SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for arbitrary objects, RuntimeError for TorchScript
            raise ModelUnavailableError(
                f"{path} cannot be read as a plain state dict with torch.load(weights_only=True) "
                f"({type(exc).__name__}); re-save its state_dict() as .safetensors and pass that file") from exc
    else:
        raise ModelUnavailableError(f"checkpoint {path} has an unsupported suffix; cfviz reads "
                                    ".safetensors files and .pt/.pth/.bin state dicts")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ModelUnavailableError(f"{path} does not hold a state dict of tensors; save model.state_dict() "
                                    "(ideally as .safetensors) and pass that file")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel/DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, metadata


# ---------------------------------------------------------------------------------------------
# helpers


def looks_like_file(value: str) -> bool:
    """Whether ``pretrained`` names a checkpoint file rather than an open_clip tag.

    Tags are bare words (``laion400m_e32``); anything with a path separator or suffix is a file.

    >>> looks_like_file("laion400m_e32"), looks_like_file("weights/clip.safetensors")
    (False, True)
    """
    return (Path(value).suffix.lower() in _SUFFIXES or "/" in value or os.sep in value
            or value.startswith("~") or Path(value).exists())


def checkpoint_override(arch: str, pretrained: str) -> tuple[str, bool]:
    """``pretrained``, or the file ``CFVIZ_CLIP_CHECKPOINT`` names in place of the default weights; whether it did."""
    env_file = os.environ.get(CHECKPOINT_ENV, "").strip()
    if env_file and arch == DEFAULT_CLIP and pretrained == DEFAULT_PRETRAINED:
        return env_file, True
    return pretrained, False


def checkpoint_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be a CLIP checkpoint, as a clause (``None`` when its header reads).

    Cheap: only the header is read. Safetensors files must start with a JSON header; ``.pt`` /
    ``.pth`` / ``.bin`` files must be torch zip archives (or legacy torch pickles, which
    :func:`read_state_dict` then reads with ``weights_only=True``).

    >>> import tempfile, pathlib
    >>> junk = pathlib.Path(tempfile.mkdtemp()) / "junk.safetensors"
    >>> _ = junk.write_bytes(bytes(range(256)) * 4)
    >>> checkpoint_problem(junk)
    'is not a safetensors file (its first 8 bytes give a header of 506097522914230528 bytes)'
    """
    import json
    import struct

    p = Path(path)
    if not p.exists():
        return "does not exist"
    if not p.is_file():
        return "is not a file"
    if p.suffix.lower() not in _SUFFIXES:
        return "has an unsupported suffix; cfviz reads .safetensors files and .pt/.pth/.bin state dicts"
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
            size = os.fstat(fh.fileno()).st_size
            if p.suffix.lower() != ".safetensors":
                # torch.save writes a zip archive (PK..); very old files are pickles (protocol 2+: 0x80)
                if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
                    return None
                return "is not a torch checkpoint (neither a torch zip archive nor a torch pickle)"
            if len(head) < 8:
                return "is too short to be a safetensors file"
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > min(_MAX_HEADER, size - 8):
                return f"is not a safetensors file (its first 8 bytes give a header of {n} bytes)"
            header = json.loads(fh.read(n).decode("utf-8"))
    except OSError as exc:
        return f"cannot be read ({(exc.strerror or type(exc).__name__).lower()})"
    except (UnicodeDecodeError, ValueError):
        return "is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "is not a safetensors file (its header is not a JSON object)"
    return None


def _check_arch_name(name: str) -> None:
    if name in _CFVIZ_ARCHS:
        return
    from cfviz.models.clip_catalog import list_models

    models = list_models()
    if name not in models:
        raise ConfigError(f"unknown CLIP architecture {name!r}{did_you_mean(name, models)} (use an open_clip model "
                          f"name from open_clip.list_models(), e.g. {DEFAULT_CLIP!r}, or {TINY_CLIP!r})")


def _build_architecture(name: str, *, quick_gelu: bool = False) -> tuple[Any, Any, tuple, tuple]:
    """Build ``name`` on the CPU with the current (caller-seeded) RNG; return model, tokenizer, mean, std."""
    if name in _CFVIZ_ARCHS:
        from open_clip.model import CLIP
        from open_clip.tokenizer import SimpleTokenizer

        cfg = model_config(_CFVIZ_ARCHS[name])
        model = CLIP(**cfg, quick_gelu=quick_gelu)
        tokenizer = SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
        return model, tokenizer, _OPENAI_MEAN, _OPENAI_STD
    import open_clip

    model = open_clip.create_model(name, pretrained=None, device="cpu", force_quick_gelu=quick_gelu)
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except OSError as exc:  # architectures with a Hugging Face text tokenizer need the hub
        raise ModelUnavailableError(f"the tokenizer of {name} could not be loaded ({exc}); run once with "
                                    "network access so that the Hugging Face cache (HF_HOME) holds it") from exc
    pp = getattr(model.visual, "preprocess_cfg", {}) or {}
    return model, tokenizer, tuple(pp.get("mean", _OPENAI_MEAN)), tuple(pp.get("std", _OPENAI_STD))


def _make_bundle(model: Any, tokenizer: Any, *, name: str, pretrained: str | None, weights: str,
                 seed: int | None, mean: tuple, std: tuple, device: Any, dtype: Any, source: str,
                 extra: dict[str, Any] | None = None) -> ClipBundle:
    import torch

    visual = model.visual
    if not hasattr(visual, "grid_size"):
        raise ConfigError(f"{name} has no ViT patch grid (model.visual.grid_size); cfviz needs a ViT image tower")
    image_size, patch_size = _pair(visual.image_size), _pair(visual.patch_size)
    if image_size[0] != image_size[1] or patch_size[0] != patch_size[1]:
        raise ConfigError(f"{name} has a non-square input {image_size} or patch {patch_size}; cfviz expects square")
    dev = torch.device(device)
    model = model.to(device=dev, dtype=dtype).eval()
    info = make_info(kind="clip", library="open_clip", name=name, revision=pretrained, weights=weights,
                     seed=seed, source=source, dtype=dtype, device=dev, pretrained=pretrained, **(extra or {}))
    model.cfviz_info = info
    return ClipBundle(model=model, tokenizer=tokenizer, image_size=int(image_size[0]),
                      patch_size=int(patch_size[0]), grid_size=(int(visual.grid_size[0]), int(visual.grid_size[1])),
                      embed_dim=int(visual.output_dim), mean=tuple(float(m) for m in mean),
                      std=tuple(float(s) for s in std), name=name, pretrained=pretrained, weights=weights,
                      seed=seed, device=str(dev), dtype=info["dtype"])


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _hub_checkpoint(name: str, tag: str, cache_dir: Any) -> tuple[Path, bool, Any, Any, dict[str, Any]]:
    """Find (download or cache) the file for an open_clip tag; return path, quick_gelu, mean, std, extra."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if name in _CFVIZ_ARCHS:
        raise ConfigError(f"{name} has no published weights; pass a checkpoint file as pretrained=... "
                          "or use tiny_clip() for random weights")
    cfg = get_pretrained_cfg(name, tag)
    tags = list_pretrained_tags_by_model(name)
    if not cfg:
        raise ConfigError(f"open_clip has no pretrained tag {tag!r} for {name}{did_you_mean(tag, tags)} (known tags: "
                          f"{', '.join(tags) or 'none'}), or pass a checkpoint file")
    what = f"the {name} CLIP weights {tag!r}"
    source = weights_source(tag, cfg, tags, cache_dir)
    extra: dict[str, Any]
    if source[0] == "hub":
        from cfviz.models.hub import hub_file

        _, repo_id, names = source  # the first of names the repository has (cache first when offline)
        path = hub_file(repo_id, names, revision=None, cache_dir=cache_dir, what=what, fix=_fix())
        commit = path.parent.name if path.parent.parent.name == "snapshots" else None  # .../snapshots/<commit>/<file>
        extra = {"hub_repo": repo_id, "file": path.name, "commit": commit}
    elif source[0] == "url":
        from cfviz.models.hub import url_file

        _, url, (folder,) = source
        base = os.path.basename(url)
        sha = Path(base).stem.split("-")[-1] if "mlfoundations" in url else (
            url.split("/")[-2] if "openaipublic" in url else None)
        path = url_file(url, cache_dir=Path(folder), sha256_prefix=sha, what=what, fix=_fix(folder))
        extra = {"url": url, "file": path.name}
    else:
        raise ValueError(f"open_clip lists no download for {name}/{tag}; pass a checkpoint file")
    return path, bool(cfg.get("quick_gelu", False)), cfg.get("mean"), cfg.get("std"), extra


def weights_source(tag: str, cfg: dict[str, Any], tags: list[str], cache_dir: Any = None) -> tuple[str, str, list[str]]:
    """Where an open_clip tag's weights come from: ``("hub", repo id, file names to try)``,
    ``("url", url, [download folder])`` or ``("none", "", [])``; ``cfg`` is the tag's pretrained config.

    >>> weights_source("openai", {"hf_hub": "timm/vit_base_patch32_clip_224.openai/", "url": "https://x/a.pt"},
    ...                ["openai"])
    ('hub', 'timm/vit_base_patch32_clip_224.openai', ['open_clip_model.safetensors', 'open_clip_pytorch_model.bin'])
    """
    hf, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    repo_id, filename = os.path.split(hf) if hf else ("", "")
    # open_clip points some tags at another tag's hub repository (ViT-B-16-plus-240 laion400m_e32
    # -> ...laion400m_e31); the release URL has the weights the tag names, so prefer it then
    repo_tag = repo_id.rsplit(".", 1)[-1] if repo_id else ""
    use_url = bool(url) and repo_tag != tag and repo_tag in tags
    if repo_id and not use_url:
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename and Path(filename).suffix in (".bin", ".pth", ".pt"):
            names.insert(0, str(Path(filename).with_suffix(".safetensors")))
        return "hub", repo_id, names
    if url:
        folder = Path(cache_dir) if cache_dir is not None else Path("~/.cache/clip").expanduser()
        return "url", url, [str(folder)]
    return "none", "", []


def cached_weights(name: str, tag: str, cache_dir: Any = None) -> tuple[Path | None, str]:
    """The local file of an open_clip tag's weights if it is downloaded already, and where it was looked
    for (no network, no open_clip import). For checks before a run; :func:`load_clip` finds the same file.
    """
    from cfviz.models import clip_catalog

    cfg = clip_catalog.pretrained_cfg(name, tag)
    kind, where, names = weights_source(tag.lower().replace("-", "_"), cfg, clip_catalog.pretrained_tags(name),
                                        cache_dir)
    if kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        from cfviz.models.hub import hub_cache_dir

        cache = hub_cache_dir(cache_dir)
        for filename in names:
            found = try_to_load_from_cache(where, filename, cache_dir=cache)
            if isinstance(found, str):
                return Path(found), cache
        return None, f"{cache}, hub repository {where}"
    if kind == "url":
        path = Path(names[0]) / os.path.basename(where)
        return (path if path.is_file() else None), str(path)
    return None, "nowhere: open_clip lists no download for it"


def _load_state(model: Any, state: dict[str, Any], *, path: Path, name: str) -> None:
    from open_clip.model import resize_pos_embed

    own = model.state_dict()
    if "logit_scale" in state and "logit_scale" in own and state["logit_scale"].shape != own["logit_scale"].shape:
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    resize_pos_embed(state, model)  # no-op when the grid already matches
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        first = " ".join(str(exc).split())[:300]
        raise ModelUnavailableError(f"checkpoint {path} does not fit the {name} architecture ({first}); "
                                    "pass the matching architecture as name=...") from None
    if missing or unexpected:
        parts = [f"{len(keys)} {kind} keys such as {', '.join(keys[:3])}"
                 for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise ModelUnavailableError(f"checkpoint {path} does not fit the {name} architecture ({'; '.join(parts)}); "
                                    "pass the matching architecture as name=...")
