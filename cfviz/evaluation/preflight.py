"""Check everything a run needs before any data is generated or any model is built.

:func:`preflight` runs at the top of :func:`cfviz.experiments.evaluate`. It validates the
:class:`~cfviz.evaluation.config.RunSpec` (ranges, choices, settings that must fit together)
and then what lies outside it: the data folder, the output and store folders, the device, the
CLIP architecture, pretrained tag or checkpoint file, the diffusion folder and the AA-CLIP
checkpoint. Each failure is one :class:`~cfviz.errors.ConfigError` whose ``field`` names the
setting (``"models.device"``, ``"out_dir"``), so that the CLI can name its flag.

It is cheap: file-system probes and header reads. No model library is imported for a check
that needs only a name or a file: CLIP architectures and tags are read from open_clip's files
(:mod:`cfviz.models.clip_catalog`), so a bad ``--clip-arch`` or a tag not cached offline fails in
about a second; only ``--device`` other than cpu and ``--dtype float16`` on the CPU import torch.

>>> from cfviz.evaluation.config import ModelChoice, RunSpec, check_int
>>> preflight(RunSpec(models=ModelChoice(device="gpu")))
Traceback (most recent call last):
...
cfviz.errors.ConfigError: models.device 'gpu' is not a torch device; use cpu, cuda, cuda:N or mps
"""

from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path
from typing import Any

from cfviz.errors import ConfigError, DataRootError, did_you_mean
from cfviz.evaluation.config import ModelChoice, RunSpec, check_int
from cfviz.evaluation.families import check_family_settings
from cfviz.models.speed import check_compile


def preflight(spec: RunSpec, out_dir: str | os.PathLike[str] | None = None,
              store_dir: str | os.PathLike[str] | None = None) -> str:
    """Raise a :class:`~cfviz.errors.ConfigError` for the first setting or input a run cannot use.

    Returns the denoiser family it checked the settings for (``"sd"``, ``"sd3"``, ...), which the
    run's plan records (:func:`~cfviz.evaluation.families.diffusion_family`, read once).

    ``out_dir`` and ``store_dir`` (when given) must be folders that can be written (or created).
    """
    spec.validate()
    check_dataset_options(spec)
    check_data_root(spec)
    if out_dir is not None:
        check_writable_folder(out_dir, "out_dir")
    if store_dir is not None and not holds_store(store_dir):  # an existing store may be read-only: scoring
        check_writable_folder(store_dir, "store_dir")             # needs no write (store_check.open_run_store)
    check_device(spec.models.device)
    check_cpu_half(spec.models)
    check_compile(spec.models.compile, spec.models.device)  # a missing compiler, before the data set is opened
    check_clip(spec.models)  # a given CLIP size must be the model's: resolve_clip_size (the plan) says so
    check_diffusion(spec.models)
    family = check_family_settings(spec)
    if spec.extraction.aaclip is not None and not Path(spec.extraction.aaclip).expanduser().is_file():
        raise ConfigError(f"{{extraction.aaclip}} {spec.extraction.aaclip} is not a file; pass the adapters "
                          "written by `cfviz train-aaclip` (OUT/aaclip.safetensors)", "extraction.aaclip")
    check_aaclip_size(spec)
    return family


def check_aaclip_size(spec: RunSpec) -> None:
    """AA-CLIP's input side must be a whole number of the CLIP's patches (its position grid is resized to it)."""
    from cfviz.models.clip import tiny_geometry

    size = spec.extraction.aaclip_size
    if spec.extraction.aaclip is None or size is None:
        return
    arch = spec.models.clip_arch
    patch = tiny_geometry(arch)[1]
    if size % patch:
        low, high = size // patch * patch, (size // patch + 1) * patch
        raise ConfigError(f"{{extraction.aaclip_size}} {size} is not a multiple of {arch}'s {patch}-px patches; "
                          f"use {low or high} or {high}", "extraction.aaclip_size")


# ---------------------------------------------------------------------------------------------
# data


def reader_options(kind: str) -> list[str]:
    """The keyword options the data set reader of ``kind`` accepts (``dataset_options`` keys)."""
    import importlib

    from cfviz.data import DATASET_KINDS

    module_name, cls_name, _ = DATASET_KINDS[kind]
    module = importlib.import_module(module_name)
    functions: list[Any] = [getattr(module, cls_name).__init__]
    if kind == "textures":  # other keywords go on to the generator
        functions.append(module.generate_textures)
    names: list[str] = []
    for fn in functions:
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in (
                    "self", "root", "categories", "split") and p.name not in names:
                names.append(p.name)
    return names


def check_dataset_options(spec: RunSpec) -> None:
    """Every ``dataset_options`` key must be an option of the chosen reader."""
    if not spec.dataset_options:
        return
    from cfviz.data import DATASET_KINDS

    known = reader_options(spec.dataset)
    for key in spec.dataset_options:
        if key not in known:
            path = f"dataset_options.{key}"
            kinds = [k for k in sorted(DATASET_KINDS) if key in reader_options(k)]
            where = (f"only to {', '.join(kinds)}" if kinds else
                     f"no reader takes it; the {spec.dataset} reader takes {', '.join(known)}")
            raise ConfigError(f"{{{path}}} does not apply to {{dataset}} {spec.dataset!r} ({where})", path,
                              mentions=("dataset",))
    limit = spec.dataset_options.get("limit_per_type")
    if limit is not None:
        check_int(limit, "dataset_options.limit_per_type", minimum=1,
                  why=" (test images kept per category and defect type)")


def check_data_root(spec: RunSpec) -> None:
    """The data folder exists and can be read; a texture folder still to generate can be written."""
    from cfviz.data import DATASET_KINDS

    needs_root = DATASET_KINDS[spec.dataset][2]
    if spec.dataset == "textures":
        from cfviz.data.textures import default_textures_dir

        root = Path(spec.root).expanduser() if spec.root else default_textures_dir()
        if (root / "manifest.json").is_file() and os.access(root, os.R_OK | os.X_OK):
            return  # generated already (regenerated only when other parameters are asked for)
        try:
            check_writable_folder(root, "root")
        except ConfigError as exc:
            raise DataRootError(exc.template + " (the texture data set is generated there on first use)",
                                "root") from None
        return
    if spec.root is None:
        if needs_root:
            raise DataRootError(f"{{root}} is needed for {{dataset}} {spec.dataset!r}: the folder that holds the "
                                "data set", "root", mentions=("dataset",))
        return
    root = Path(spec.root).expanduser()
    if not root.exists():
        raise DataRootError(f"{{root}} {root} does not exist; pass the folder that holds the {spec.dataset} "
                            "data set", "root")
    if not root.is_dir():
        raise DataRootError(f"{{root}} {root} is a file, not a folder; pass the folder that holds the "
                            f"{spec.dataset} data set", "root")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataRootError(f"{{root}} {root} cannot be read (permission denied); fix its permissions or "
                            "copy the data set elsewhere", "root")


# ---------------------------------------------------------------------------------------------
# output folders


def holds_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a capture store already (a header, or entries whose header was lost)."""
    p = Path(path).expanduser()
    return (p / "store.json").is_file() or (p / "entries").is_dir()


def check_writable_folder(path: str | os.PathLike[str], field: str) -> None:
    """``path`` is a folder that can be written, or one that can be created (nothing is left behind)."""
    target = Path(path).expanduser()
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == target else f"lies under {probe}, which is a file"
        raise ConfigError(f"{{{field}}} {target} {where}, not a folder; choose another folder", field)
    try:  # os.access lies for root and for read-only mounts: try an actual write
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".cfviz-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        where = "it" if probe == target else f"{probe}, its nearest existing folder,"
        raise ConfigError(f"{{{field}}} {target} cannot be written ({where} refuses new files: {reason}); choose a "
                          "folder you can write to", field) from None


# ---------------------------------------------------------------------------------------------
# device


def cpu_has_half_kernels() -> bool:
    """Whether this torch runs float16 layer norms and matmuls on the CPU (torch < 2.2 does not)."""
    import torch

    try:
        x = torch.ones(2, 4, dtype=torch.float16)
        torch.nn.functional.layer_norm(x, (4,))
        x @ x.T  # noqa: B018  (a probe: raises where the kernel is missing)
    except RuntimeError:
        return False
    return True


def check_cpu_half(choice: ModelChoice) -> None:
    """``--dtype float16`` on the CPU only where this torch has the CPU kernels (else bfloat16 or a GPU)."""
    if choice.dtype != "float16" or str(choice.device).strip().split(":")[0] != "cpu":
        return
    if not cpu_has_half_kernels():
        import torch

        raise ConfigError(f"{{models.dtype}} float16 on the CPU needs CPU float16 kernels, which torch "
                          f"{torch.__version__} lacks; use bfloat16 on the CPU, or float16 on a GPU "
                          "({models.device} cuda)", "models.dtype", mentions=("models.device",))


def check_device(device: str, field: str = "models.device") -> None:
    """The torch device exists on this machine (``cpu`` needs no torch import)."""
    name = str(device).strip()
    if name == "cpu":
        return
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{{{field}}} {name!r} is not a torch device; use cpu, cuda, cuda:N or mps", field) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            raise ConfigError(f"{{{field}}} {name!r} asks for a GPU, but torch {torch.__version__} ({built}) sees "
                              "no CUDA device here; use cpu, or run where a GPU and a CUDA build of torch are",
                              field)
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"{{{field}}} {name!r}: this machine has {count} CUDA device(s), numbered 0 to "
                              f"{count - 1}", field)
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{{{field}}} 'mps' asks for Apple's GPU, which torch does not see on this machine; "
                              "use cpu", field)
    elif dev.type != "cpu":
        backend = getattr(torch, dev.type, None)
        if backend is None or not hasattr(backend, "is_available") or not backend.is_available():
            raise ConfigError(f"{{{field}}} {name!r}: torch has no usable {dev.type} device here; use cpu, cuda "
                              "or mps", field)


# ---------------------------------------------------------------------------------------------
# models


def check_clip(choice: ModelChoice) -> None:
    """The CLIP architecture is known (a ViT); its tag or checkpoint file is usable."""
    from cfviz.models.clip import CHECKPOINT_ENV, DEFAULT_CLIP, TINY_CLIP, checkpoint_override, looks_like_file

    # the tiny CLIP takes clip_arch's input geometry (cfviz.models.clip.tiny_geometry): check that arch below
    tiny_like = choice.clip == "tiny" and choice.clip_arch not in (TINY_CLIP, DEFAULT_CLIP)
    if choice.clip == "tiny" and not tiny_like:
        return
    arch = choice.clip_arch
    pretrained, from_env = checkpoint_override(arch, str(choice.clip_pretrained))
    if choice.clip == "pretrained" and (from_env or looks_like_file(pretrained)):  # cheap: before open_clip
        check_checkpoint_file(pretrained, "models.clip_pretrained",
                              origin=f" (from {CHECKPOINT_ENV})" if from_env else "")
    if arch != TINY_CLIP:
        from cfviz.models import clip_catalog  # open_clip's files, without importing open_clip (and torch)

        models = clip_catalog.list_models()
        if arch not in models:
            raise ConfigError(f"{{models.clip_arch}} {arch!r} is not an open_clip architecture"
                              f"{did_you_mean(arch, models)} (open_clip.list_models() lists all {len(models)}; "
                              f"{TINY_CLIP!r} is the tiny one)",
                              "models.clip_arch")
        vision = (clip_catalog.get_model_config(arch) or {}).get("vision_cfg", {})
        if isinstance(vision.get("layers"), (list, tuple)):  # ModifiedResNet: no patch grid
            raise ConfigError(f"{{models.clip_arch}} {arch!r} has a ResNet image tower; cfviz needs a ViT, e.g. "
                              f"{DEFAULT_CLIP!r}", "models.clip_arch")
    if tiny_like or choice.clip != "pretrained" or from_env or looks_like_file(pretrained):
        return
    if arch == TINY_CLIP:
        raise ConfigError(f"{{models.clip_arch}} {TINY_CLIP!r} has no published weights; pass a checkpoint file as "
                          "{models.clip_pretrained}", "models.clip_pretrained", mentions=("models.clip_arch",))
    from cfviz.models import clip_catalog

    tags = clip_catalog.pretrained_tags(arch)
    if pretrained.lower().replace("-", "_") not in tags:
        if not tags:
            raise ConfigError(f"{{models.clip_pretrained}} {pretrained!r}: open_clip publishes no weights for {arch}; "
                              "pass a checkpoint file", "models.clip_pretrained")
        raise ConfigError(f"{{models.clip_pretrained}} {pretrained!r} is not a pretrained tag of {arch}"
                          f"{did_you_mean(pretrained, tags)} (its tags: {', '.join(tags)}), or pass a checkpoint file",
                          "models.clip_pretrained")
    check_clip_weights_cached(arch, pretrained)


def check_clip_weights_cached(arch: str, tag: str) -> None:
    """Offline (``HF_HUB_OFFLINE``), an open_clip tag's weights must be downloaded already.

    Online they are fetched when the models load (an unreachable host fails within seconds there);
    offline that can be known now, from the cache alone.
    """
    from cfviz.models.clip import CHECKPOINT_ENV, cached_weights
    from cfviz.models.hub import hub_offline

    if not hub_offline():
        return
    found, where = cached_weights(arch, tag)
    if found is not None:
        return
    raise ConfigError(f"{{models.clip_pretrained}} {tag!r}: the {arch} weights are not in the local cache "
                      f"({where}) and HF_HUB_OFFLINE is set; pass a checkpoint file as "
                      f"{{models.clip_pretrained}}, set {CHECKPOINT_ENV} to one, or run once with network access",
                      "models.clip_pretrained")


def check_checkpoint_file(path: str | os.PathLike[str], field: str, *, origin: str = "") -> None:
    """A weights file exists and its header parses: safetensors (JSON header) or a torch archive."""
    from cfviz.models.clip import checkpoint_problem

    p = Path(path).expanduser()
    problem = checkpoint_problem(p)
    if problem:
        raise ConfigError(f"{{{field}}} {p}{origin} {problem}", field)


def check_diffusion(choice: ModelChoice) -> None:
    """The diffusion choice is a tiny name, ``random``, a hub id, or a folder holding a complete
    diffusers pipeline of a supported family (:data:`cfviz.models.diffusion.PIPELINE_FAMILIES`).

    Hub ids are not probed online (offline, they must be cached).
    """
    from cfviz.evaluation.families import tiny_names

    if choice.diffusion in ("tiny", "random") or choice.diffusion in tiny_names():
        return
    from cfviz.models.diffusion import (DEFAULT_SD_INPAINT, PIPELINE_ENV, folder_problems, looks_like_folder,
                                        pipeline_override, unsupported_pipeline)

    value = choice.diffusion
    if value.startswith("tiny") and not Path(value).expanduser().exists():
        raise ConfigError(f"{{models.diffusion}} {value!r} is not a tiny pipeline{did_you_mean(value, tiny_names())} "
                          f"(tiny ones: {', '.join(tiny_names())}); or pass random, a hub id or a diffusers folder",
                          "models.diffusion")
    value, from_env = pipeline_override(value)
    origin = f" (from {PIPELINE_ENV})" if from_env else ""
    if not looks_like_folder(value):
        _check_hub_id(value, choice.revision)
        return
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{{models.diffusion}} {folder}{origin} is not a folder; pass tiny, random, a diffusers "
                          f"folder (with model_index.json) or a hub id such as {DEFAULT_SD_INPAINT!r}",
                          "models.diffusion")
    unsupported = unsupported_pipeline(folder)
    if unsupported:
        raise ConfigError(f"{{models.diffusion}} {folder}{origin} is not a pipeline cfviz can evaluate: {unsupported}",
                          "models.diffusion")
    missing = folder_problems(folder)
    if missing:
        raise ConfigError(f"{{models.diffusion}} {folder}{origin} is not a complete diffusers pipeline "
                          f"(missing {', '.join(missing)}); point it at a folder saved with pipe.save_pretrained() "
                          "or at a hub id", "models.diffusion")


def _check_hub_id(repo_id: str, revision: str | None = None) -> None:
    """A hub id is ``owner/name``; offline, its snapshot must already be in the cache.

    Online, the weights are fetched when the models load (a missing repository fails within
    seconds there); offline that can be known now, without a network call.
    """
    import re

    from cfviz.models.hub import hub_cache_dir, hub_offline

    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo_id):
        raise ConfigError(f"{{models.diffusion}} {repo_id!r} is neither tiny, random, a hub id (owner/name) nor an "
                          "existing folder", "models.diffusion")
    if not hub_offline():
        return
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(), local_files_only=True,
                          allow_patterns=["model_index.json"])
    except Exception:  # LocalEntryNotFoundError and friends: not cached
        at = f" at revision {revision}" if revision else ""
        raise ConfigError(f"{{models.diffusion}} {repo_id!r}{at} is not in the Hugging Face cache ({hub_cache_dir()}) "
                          "and HF_HUB_OFFLINE is set; run once with network access, or pass a local diffusers "
                          "folder", "models.diffusion") from None
