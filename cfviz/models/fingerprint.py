"""Fingerprints of weights on disk: the SHA-256 of each file, computed once per file version.

A capture store must not mix entries of different weights, and a local checkpoint or folder can
change under the same name. Hashing every file on every run would cost seconds per gigabyte, so
digests are kept in a small JSON file in the cfviz cache folder (:func:`cfviz_cache_dir`), keyed
by the file's absolute path, size, modification time (ns) and inode. Rewriting, replacing or
touching a file changes the key and the file is hashed again; an unchanged file costs one
``stat``. The cache holds no result: deleting it only makes the next run hash again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cfviz.models._cache import cfviz_cache_dir

CACHE_NAME = "file-sha256.json"
_CHUNK = 1 << 22


def _cache_path() -> Path:
    return cfviz_cache_dir() / CACHE_NAME


def _read_cache() -> dict[str, dict]:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):  # missing or damaged: start afresh
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict[str, dict]) -> None:
    from cfviz.utils.io import atomic_write_json

    try:
        atomic_write_json(_cache_path(), cache, indent=None)
    except OSError:  # a read-only home only costs hashing again next time
        pass


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_fingerprints(paths: list[Path] | list[str], *,
                      relative_to: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """``name -> sha256`` of each file, from the cache when the file has not changed.

    Names are paths relative to ``relative_to`` (POSIX form) when given, else file names, so
    the fingerprint does not depend on where the weights sit.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "w.bin"
    >>> _ = f.write_bytes(b"abc")
    >>> file_fingerprints([f])["w.bin"][:12]
    'ba7816bf8f01'
    """
    cache = _read_cache()
    changed = False
    out: dict[str, str] = {}
    for p in sorted(Path(x).resolve() for x in paths):
        st = p.stat()
        key = str(p)
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
        known = cache.get(key)
        if isinstance(known, dict) and all(known.get(k) == v for k, v in stamp.items()) and "sha256" in known:
            digest = str(known["sha256"])
        else:
            digest = sha256_file(p)
            cache[key] = {**stamp, "sha256": digest}
            changed = True
        name = p.relative_to(Path(relative_to).resolve()).as_posix() if relative_to is not None else p.name
        out[name] = digest
    if changed:
        _write_cache(cache)
    return out


def folder_fingerprints(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``relative path -> sha256`` of every regular file under ``folder`` (hidden ones skipped)."""
    root = Path(folder)
    files = [p for p in root.rglob("*")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return file_fingerprints(files, relative_to=root)
