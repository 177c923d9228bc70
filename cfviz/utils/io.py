"""Atomic file writes: a crash or Ctrl-C never leaves a half-written result behind.

Every writer writes to a temporary file in the destination folder, flushes it to disk and
renames it over the destination (``os.replace`` is atomic on POSIX and Windows). A writer killed
outright (SIGKILL, power loss) leaves its temporary file behind; the name
(``.<name>.<host>.<pid>.<random>.tmp``) says who wrote it, so :func:`stale_temp_files` can tell the
leftovers of dead writers from the files of writers still running (e.g. another shard).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    A full disk, a quota or the file-size limit (``ulimit -f``) raises
    :class:`~cfviz.errors.WriteError` naming the file, its folder and the bytes written (of
    ``size``, when the caller knows it); ``path`` keeps what it held before.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "x.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "x.txt").read_text()
    'hello'
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.{_host()}.{os.getpid()}.", suffix=TEMP_SUFFIX,
                                    dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results should be shareable
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # make the bytes durable before the rename
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            raise
        raise _no_room(exc, dest, tmp, size) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


#: errno values that mean "no room for this file": a full disk, a quota, the file-size limit.
NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _no_room(exc: OSError, dest: Path, tmp: Path, size: int | None) -> OSError:
    """The :class:`~cfviz.errors.WriteError` for ``exc``: which file, which folder, how far it got, what to do."""
    from cfviz.errors import WriteError

    try:
        written = tmp.stat().st_size
    except OSError:
        written = 0
    of = f" of {size:,}" if size is not None else ""
    kept = f"{dest.name} keeps what it held before" if dest.exists() else f"{dest.name} was not created"
    why = {errno.EFBIG: "the file-size limit was reached (raise it: ulimit -f)"}.get(
        exc.errno, "the disk (or your quota) is full (free space there)")
    err = WriteError(f"could not write {dest.name} in {dest.parent}: {why}; {written:,}{of} bytes were written "
                     f"before the system refused more ({exc.strerror or exc}); {kept}")
    err.errno = exc.errno
    return err


TEMP_SUFFIX = ".tmp"

#: A temporary file of another host (a shared folder) counts as abandoned after this many seconds.
FOREIGN_TEMP_AGE_S = 3600.0


def _host() -> str:
    # dots separate the fields of the temporary name: keep the host name free of them
    return socket.gethostname().split(".")[0].replace(".", "_") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): keep its file
    return True


def stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Temporary files in ``folder`` left by writers that no longer run.

    Only names made by :func:`atomic_path` count. A file of a process on this host is stale once
    that process is gone; a file of another host once it is older than
    :data:`FOREIGN_TEMP_AGE_S`. Files of live writers are never listed, so several processes can
    share a folder safely.

    >>> import tempfile, pathlib
    >>> stale_temp_files(tempfile.mkdtemp())
    []
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = []
    for path in sorted(folder.glob(f".*{TEMP_SUFFIX}")):
        parts = path.name[: -len(TEMP_SUFFIX)].split(".")
        try:
            host, pid = parts[-3], int(parts[-2])
        except (IndexError, ValueError):
            continue  # not ours: leave it
        if not host or pid <= 0:
            continue
        if host == _host():
            dead = not _pid_alive(pid)
        else:
            try:
                dead = time.time() - path.stat().st_mtime > FOREIGN_TEMP_AGE_S
            except FileNotFoundError:  # its writer just finished
                continue
        if dead:
            stale.append(path)
    return stale


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete :func:`stale_temp_files` of ``folder``; return what was removed."""
    removed = []
    for path in stale_temp_files(folder):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any, *, indent: int | None = 2) -> bytes:
    """``obj`` as the UTF-8 JSON text cfviz writes (keys sorted so that files diff cleanly).

    >>> json_bytes({"b": 1, "a": [1, 2]}, indent=None)
    b'{"a": [1, 2], "b": 1}\\n'
    """
    return (json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically (keys sorted so that files diff cleanly)."""
    return atomic_write_bytes(path, json_bytes(obj, indent=indent))


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically.

    Use it for libraries that write files themselves (safetensors, matplotlib, pandas).
    """
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def atomic_write_files(files: Mapping[str | os.PathLike[str], bytes]) -> list[Path]:
    """Write several files so that either all are replaced or none is.

    Each is written (and flushed) to its temporary file first; only when every one is complete
    are they renamed over their destinations, one right after the other. A failure while writing
    (a full disk) leaves every destination as it was.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> [p.name for p in atomic_write_files({d / "a.csv": b"x\\n", d / "a.md": b"# x\\n"})]
    ['a.csv', 'a.md']
    """
    from contextlib import ExitStack

    with ExitStack() as stack:
        for path, data in files.items():
            tmp = stack.enter_context(atomic_path(path, size=len(data)))
            tmp.write_bytes(data)
    return [Path(p) for p in files]


def save_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, Any],
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Save torch tensors to a safetensors file atomically (contiguous copies are made).

    ``metadata`` keys are written sorted: safetensors writes them in hash order, which differs
    from one process to the next, so equal tensors and metadata gave other bytes (another
    SHA-256, e.g. of an AA-CLIP checkpoint that a store's identity records).
    """
    from safetensors.torch import save, save_file

    payload = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if not metadata:
        return atomic_write_with(path, lambda tmp: save_file(payload, str(tmp)))
    blob = save(payload, metadata=dict(metadata))
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors pads it
    return atomic_write_bytes(path, len(text).to_bytes(8, "little") + text + blob[8 + size:])


def _json_default(obj: Any) -> Any:
    """JSON fallback for numpy scalars/arrays and paths."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")
