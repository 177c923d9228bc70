"""AA-CLIP checkpoints: adapter weights in safetensors, settings as JSON in its metadata. No pickle.

One file holds everything needed to rebuild the adapters on the same CLIP:

* tensors ``adapters/<name>`` (the :class:`~cfviz.clip.aaclip.adapters.AAClipAdapters` state);
  training checkpoints add ``optim/<i>/<name>`` (Adam state) and ``rng/shuffle`` (the data
  generator's state), so that a resumed run continues exactly;
* metadata (strings): ``format``, ``config`` (JSON), ``seed``, ``model`` (the CLIP's
  provenance, checked on load), and whatever the trainer adds (``stage``, ``epoch``,
  ``train_config``, ``history``, ``data``).

Files are written atomically (:func:`cfviz.utils.io.save_safetensors`). Training writes
``stage1_epoch_001.safetensors``, ...; :func:`latest_checkpoint` finds the last one.

Example
-------
>>> import tempfile, pathlib, torch
>>> from cfviz.models import tiny_clip
>>> from cfviz.clip.aaclip.model import AAClip
>>> b = tiny_clip(seed=0)
>>> p = AAClip(b, seed=3).save(pathlib.Path(tempfile.mkdtemp()) / "a.safetensors")
>>> AAClip.load(p, b).seed
3
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from cfviz.errors import CfvizError
from cfviz.utils.lazy import lazy_names

FORMAT = "cfviz-aaclip/1"
_EPOCH_FILE = re.compile(r"^stage([12])_epoch_(\d{3,})\.safetensors$")
#: model-info keys that must match between a checkpoint and the bundle it is loaded onto
_IDENTITY = ("name", "weights", "pretrained", "seed", "revision")


class CheckpointError(CfvizError, ValueError):
    """An AA-CLIP checkpoint is missing, malformed or belongs to another CLIP model."""


def checkpoint_name(stage: int, epoch: int) -> str:
    """``stage1_epoch_003.safetensors`` for stage 1, epoch 3 (1-based).

    >>> checkpoint_name(2, 15)
    'stage2_epoch_015.safetensors'
    """
    return f"stage{int(stage)}_epoch_{int(epoch):03d}.safetensors"


def epoch_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[int, int, Path]]:
    """``(stage, epoch, path)`` of every epoch checkpoint in ``folder``, in training order."""
    d = Path(folder)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _EPOCH_FILE.match(p.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(found)


#: The stage-2 epoch whose checkpoint the paper's results come from: the maintainers' answer in
#: AA-CLIP issue #13 (relayed in #16), and the epoch the released ``results/test.log`` loads
#: (``methods.md`` 3.1). The released ``test.py`` evaluates every ``image_adapter_*.pth`` in turn.
PAPER_EPOCH = 15


def epoch_checkpoint(folder: str | os.PathLike[str], epoch: int, stage: int = 2) -> Path:
    """The checkpoint of ``stage``'s ``epoch`` in a training folder; one clear error listing those there.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / checkpoint_name(2, 15)).write_bytes(b"")
    >>> epoch_checkpoint(d, 15).name
    'stage2_epoch_015.safetensors'
    """
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise CheckpointError(f"epoch must be a positive integer (the paper evaluates stage-2 epoch {PAPER_EPOCH}), "
                              f"got {epoch!r}")
    d = Path(folder)
    if not d.is_dir():
        raise CheckpointError(f"{folder} is not a training folder; an epoch is chosen from the folder that "
                              "`cfviz train-aaclip --out DIR` wrote (pass DIR)")
    found = [e for s, e, _ in epoch_checkpoints(d) if s == stage]
    path = d / checkpoint_name(stage, epoch)
    if epoch not in found:
        have = f"epochs {found[0]}..{found[-1]}" if found else "none"
        raise CheckpointError(f"{d} has no stage-{stage} checkpoint of epoch {epoch} ({have} there); choose one of "
                              f"those, or train more epochs (`cfviz train-aaclip --stage2-epochs {epoch}` resumes)")
    return path


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The last epoch checkpoint written in ``folder`` (stage 2 after stage 1), or ``None``."""
    found = epoch_checkpoints(folder)
    return found[-1][2] if found else None


def save_checkpoint(path: str | os.PathLike[str], model: Any, *, metadata: dict[str, Any] | None = None,
                    extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model``'s adapters (+ ``extra`` tensors) and metadata to ``path`` atomically."""
    from cfviz.utils.io import save_safetensors

    tensors = {f"adapters/{k}": v for k, v in model.adapters.state_dict().items()}
    tensors.update(extra or {})
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_json(), sort_keys=True),
            "seed": str(model.seed), "model": json.dumps(model.bundle.info(), sort_keys=True, default=str)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
                 for k, v in (metadata or {}).items()})
    return save_safetensors(path, tensors, meta)


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint file, with one clear error when it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    p = Path(path)
    if p.is_dir():
        latest = latest_checkpoint(p)
        final = p / "aaclip.safetensors"
        p = final if final.is_file() else (latest if latest is not None else final)
    if not p.is_file():
        raise CheckpointError(f"no AA-CLIP checkpoint at {path}; train one with `cfviz train-aaclip --out DIR` "
                              "and pass DIR/aaclip.safetensors (or an epoch file in DIR)")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p} is not a readable safetensors file ({exc}); re-run training to rewrite it") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not an AA-CLIP checkpoint written by cfviz (format {meta.get('format')!r}, "
                              f"expected {FORMAT!r})")
    return tensors, meta


def check_same_model(meta: dict[str, str], bundle: Any, path: Any) -> None:
    """Raise :class:`CheckpointError` when ``bundle`` is not the CLIP the checkpoint was trained on."""
    stored = json.loads(meta.get("model", "{}"))
    here = bundle.info()
    diff = {k: (stored.get(k), here.get(k)) for k in _IDENTITY if stored.get(k) != here.get(k)}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs given {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(f"{path} was trained on another CLIP ({detail}); load the CLIP it was trained on")


# load_aaclip builds an AAClip, so it lives in .model (which reads and writes through here); this old path works
__getattr__, __dir__ = lazy_names(__name__, {"load_aaclip": "cfviz.clip.aaclip.model"})
