"""Text anchors: one normal and one anomalous direction per class, from a prompt ensemble.

Each prompt is encoded with CLIP's text tower. The embeddings of a state group (normal or
anomalous) are averaged and the mean is L2-normalised, giving a ``(2, D)`` tensor
``[normal, anomalous]``.

Normalise-then-average (the default, ``normalize_prompts=True``) gives every prompt the same
weight in the mean, which is what an "ensemble of directions" means; anomalib averages the raw
embeddings (``normalize_prompts=False``), so prompts whose embeddings happen to be longer weigh
more. Both normalise the mean, and with well-trained CLIP weights they differ little; the choice
is a parameter so that an ablation can measure it.

Anchors are cached per (model, prompt lists, normalisation, device, dtype): every WinCLIP /
PatchCLIP built for the same class on the same model encodes its prompts once. The cache holds
the model weakly (it goes away with the model). Modifying a model's text weights in place
(e.g. training an adapter) makes its cached anchors stale: call :func:`clear_text_cache`.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from cfviz.clip.prompts import prompt_ensemble

# model -> {key: (2, D) float32 anchors}; weak so that a deleted model frees its entries
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple, Any]] = weakref.WeakKeyDictionary()
_STATS = {"hits": 0, "misses": 0}


def encode_prompts(bundle: Any, prompts: Sequence[str], *, batch_size: int = 256) -> Any:
    """Projected text embeddings ``(N, D)`` (float32, not normalised) of ``prompts``.

    >>> from cfviz.models import tiny_clip
    >>> encode_prompts(tiny_clip(seed=0), ["a photo of a screw."]).shape
    torch.Size([1, 32])
    """
    import torch

    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    model = bundle.model
    device = torch.device(bundle.device)
    out = []
    with torch.inference_mode():
        for i in range(0, len(prompts), batch_size):  # bounds memory for long prompt lists
            tokens = bundle.tokenizer(list(prompts[i:i + batch_size])).to(device)
            out.append(model.encode_text(tokens).float())
    return torch.cat(out)


def anchors_from_embeddings(normal: Any, anomalous: Any, *, normalize_prompts: bool = True) -> Any:
    """``(2, D)`` unit anchors ``[normal, anomalous]`` from two ``(N, D)`` embedding groups.

    >>> import torch
    >>> a = anchors_from_embeddings(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, -3.0]]))
    >>> a.round(decimals=4)
    tensor([[ 0.7071,  0.7071],
            [ 0.0000, -1.0000]])
    """
    import torch
    from torch.nn.functional import normalize

    groups = []
    for emb in (normal, anomalous):
        emb = torch.as_tensor(emb, dtype=torch.float32)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError(f"each embedding group must be a non-empty (N, D) matrix, got {tuple(emb.shape)}")
        if normalize_prompts:
            emb = normalize(emb, dim=-1)
        groups.append(normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(groups)


def text_anchors(bundle: Any, class_name: str | None = None, *,
                 prompts: tuple[Sequence[str], Sequence[str]] | None = None,
                 normalize_prompts: bool = True, cache: bool = True) -> Any:
    """``(2, D)`` unit text anchors ``[normal, anomalous]`` for a class, cached.

    Parameters
    ----------
    bundle:
        A :class:`~cfviz.models.bundle.ClipBundle`.
    class_name:
        Object category for WinCLIP's prompt ensemble (:func:`~cfviz.clip.prompts.prompt_ensemble`);
        ignored when ``prompts`` is given.
    prompts:
        ``(normal_prompts, anomalous_prompts)`` to use instead of the ensemble.
    normalize_prompts:
        L2-normalise each prompt embedding before averaging (default) or average raw
        embeddings as anomalib does (see the module doc).
    cache:
        Reuse (and store) anchors computed earlier for the same model and prompts.

    Example
    -------
    >>> from cfviz.models import tiny_clip
    >>> a = text_anchors(tiny_clip(seed=0), "bottle")
    >>> a.shape, bool(((a.norm(dim=1) - 1).abs() < 1e-5).all())
    (torch.Size([2, 32]), True)
    """
    normal, anomalous = prompts if prompts is not None else prompt_ensemble(class_name)
    normal, anomalous = _as_prompt_list(normal, "normal"), _as_prompt_list(anomalous, "anomalous")
    key = (tuple(normal), tuple(anomalous), bool(normalize_prompts), str(bundle.device), str(bundle.dtype))
    per_model = _CACHE.setdefault(bundle.model, {}) if cache else {}
    if key in per_model:
        _STATS["hits"] += 1
        return per_model[key].clone()  # a clone: callers may modify their copy
    _STATS["misses"] += 1
    emb = encode_prompts(bundle, normal + anomalous)  # one pass over both groups
    anchors = anchors_from_embeddings(emb[:len(normal)], emb[len(normal):], normalize_prompts=normalize_prompts)
    if cache:
        per_model[key] = anchors
    return anchors.clone()


def clear_text_cache(bundle: Any = None) -> None:
    """Forget the cached anchors of ``bundle``'s model, or of every model when ``None``.

    Call it after changing a model's text weights in place. Hit/miss counters reset only when
    everything is cleared.
    """
    if bundle is not None:
        _CACHE.pop(bundle.model, None)
        return
    _CACHE.clear()
    _STATS["hits"] = _STATS["misses"] = 0


def text_cache_info() -> dict[str, int]:
    """Cache hits, misses and the number of cached anchor sets.

    >>> sorted(text_cache_info())
    ['entries', 'hits', 'misses']
    """
    return {**_STATS, "entries": sum(len(v) for v in _CACHE.values())}


def _as_prompt_list(prompts: Any, what: str) -> list[str]:
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"{what} prompts must be a non-empty list of non-empty strings")
    return list(prompts)
