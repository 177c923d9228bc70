"""Which capture store entries a run may reuse: identity by content, checked before any model loads.

An entry is valid for the bytes it was computed from and the settings it was computed under
(DESIGN.md, "Identity by content"):

* **inputs**: each entry records the SHA-256 of its image file (:func:`image_fingerprint`;
  k-shot references are entries like any other). Before an entry is reused, the file of the same
  image id is hashed again: other bytes under the same name (a data set replaced in place, the
  default ``--out runs/evaluate`` reused for another data set) are refused, naming the image, or
  recomputed with ``recompute_changed=True`` (``--recompute-changed``). Entries of older stores
  record no fingerprint and are refused the same way. Ground-truth masks feed no stored tensor
  (scoring reads them from the data set each run), so they need none. Hashing costs about a
  millisecond per MVTec-sized PNG (benchmarks/results/fingerprint.md).
* **settings**: the store header and every entry carry the run's identity
  (:func:`cfviz.evaluation.runner.store_identity`); a store whose ``store.json`` was lost still
  refuses another ``--timesteps`` (:meth:`cfviz.capture.store.CaptureStore.require`).
* **scoring-only runs**: when every entry of the run is in the store (and none is to be
  recomputed) no model loads, so the settings of :data:`RUN_ONLY` — how models would run, not
  what they compute — are not compared, and the store may be read-only (a read-only mount).
  When entries are missing, they must match (the refusal says which flag or environment
  variable gives the stored value) and the store folder must be writable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cfviz.capture.store import CaptureStore
from cfviz.errors import ConfigError, StoreMismatchError


def _absent(value: Any) -> bool:
    return value is None or value is False


#: Settings that matter only when models run (``store_identity`` paths), each with how to set the
#: stored value when they do: its flag or environment variable (and the Python form; "" when
#: there is nothing to set, e.g. no thread count for a GPU store).
RUN_ONLY: dict[str, Callable[[Any], str]] = {
    "cpu_threads": lambda v: f"set OMP_NUM_THREADS={v} (Python: torch.set_num_threads({v}))" if v else "",
    "models.device_type": lambda v: f"run on a {v} device (--device {v}; Python: ModelChoice(device={v!r}))",
    "models.compile": lambda v: ("run without --compile (Python: ModelChoice(compile='off'))" if _absent(v) else
                                 f"run with --compile {v} (Python: ModelChoice(compile={v!r}))"),
    "models.channels_last": lambda v: ("run without --channels-last" if _absent(v) else
                                       "run with --channels-last (Python: ModelChoice(channels_last=True))"),
}

#: Other settings whose refusal can name the flag that gives the stored value.
HINTS: dict[str, Callable[[Any], str]] = {
    **RUN_ONLY,
    "batch_size": lambda v: f"run with --batch-size {v} (Python: batch_size={v})",
}

RECOMPUTE_HINT = ("rerun with recompute_changed=True to recompute such entries, or use a new out_dir (or "
                  "store_dir) for this data")  # in Python words; the CLI writes them as its flags (cfviz.cli)


def image_fingerprint(path: str | os.PathLike[str]) -> str:
    """The fingerprint an entry records of its image: ``"sha256:"`` + the SHA-256 of the file's bytes.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "000.png"
    >>> _ = f.write_bytes(b"abc")
    >>> image_fingerprint(f)[:19]
    'sha256:ba7816bf8f01'
    """
    from cfviz.models.fingerprint import sha256_file

    return "sha256:" + sha256_file(path)


def stale_entries(store: CaptureStore, records: Sequence[Any]) -> list[tuple[Any, str]]:
    """``(record, why)`` for each stored entry of ``records`` that may not be reused as it is.

    ``why`` is ``"changed"`` (the image file's bytes are not those the entry was computed from)
    or ``"unrecorded"`` (an entry of an older cfviz, without a fingerprint). Only images already
    in the store are hashed.
    """
    out = []
    for rec in records:
        if rec.image_id not in store:
            continue
        recorded = store[rec.image_id].inputs.get("image")
        if recorded is None:
            out.append((rec, "unrecorded"))
        elif recorded != image_fingerprint(rec.image_path):
            out.append((rec, "changed"))
    return out


def stale_message(stale: Sequence[tuple[Any, str]]) -> str:
    """One sentence naming the first stale entry (and how many more), with the fix."""
    rec, why = stale[0]
    n = len(stale) - 1
    more = f" (and {n} more {'entry' if n == 1 else 'entries'})" if n else ""
    if why == "changed":
        what = (f"the image {rec.image_path} is not the file that capture store entry {rec.image_id!r} was "
                "computed from (other bytes under the same name), so its stored maps belong to other pixels")
    else:
        what = (f"capture store entry {rec.image_id!r} was written by an older cfviz that recorded no fingerprint "
                f"of its image, so it cannot be checked against {rec.image_path}")
    return f"{what}{more}; {RECOMPUTE_HINT}"


def _writable(path: Path) -> bool:
    from cfviz.evaluation.preflight import check_writable_folder

    try:
        check_writable_folder(path, "store_dir")
    except ConfigError:
        return False
    return True


def open_run_store(path: str | os.PathLike[str], identity: Mapping[str, Any], records: Sequence[Any], *,
                   planned: Sequence[str] | None = None, repair: bool = False,
                   recompute_changed: bool = False) -> CaptureStore:
    """Open a run's store and decide what may be reused (see the module docstring).

    ``records``: the run's images (test images and references); ``planned``: the ids this
    process would compute if missing (default: every record's). Stale entries (changed images)
    are refused with :class:`~cfviz.errors.StoreMismatchError`, or deleted for the run to
    recompute when ``recompute_changed``. A store that cannot be written is opened read-only when
    nothing is to be computed; otherwise a :class:`~cfviz.errors.ConfigError` names ``store_dir``.
    """
    path = Path(path)
    writable = _writable(path)
    store = CaptureStore(path, readonly=not writable, repair=repair)
    ids = [r.image_id for r in records] if planned is None else list(planned)
    missing = store.missing(ids)
    mine = set(ids)  # a shard recomputes only its own entries (another shard may be writing the others)
    stale = stale_entries(store, [r for r in records if r.image_id in mine])
    computes = bool(missing) or (bool(stale) and recompute_changed)
    # a run that only reads entries: how models would run (threads, device) does not matter
    store.require(identity, ignore=() if computes else tuple(RUN_ONLY), hints=HINTS)
    if stale and not recompute_changed:
        raise StoreMismatchError(stale_message(stale))
    if computes and not writable:
        n = len(missing) + len(stale)
        raise ConfigError(f"{{store_dir}} {path} cannot be written, and {n} of the run's images must be computed "
                          "into it (not stored yet, or changed); choose a store folder you can write to, or copy "
                          "this store to one", "store_dir")
    for rec, _ in stale:
        store.remove(rec.image_id)
    return store
