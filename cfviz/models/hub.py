"""Getting weight files without ever hanging: offline mode, a quick reachability probe, the cache.

Rules (one per situation, each ending in a :class:`~cfviz.errors.ModelUnavailableError` that
names what was looked for and how to supply it):

* ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set: only the local cache is looked at.
* Otherwise the download host is probed with a short TCP connect (a few seconds at most, DNS
  included); when it cannot be reached, the local cache is used if it has the files.
* Only then is a download started (huggingface_hub applies its own time-outs from there on).

The environment is read at call time, so a test or notebook can change it on the fly.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cfviz.errors import ModelUnavailableError

#: Seconds the reachability probe may take (DNS + TCP connect).
PROBE_TIMEOUT_S = 3.0

_TRUE = {"1", "on", "yes", "true"}
T = TypeVar("T")


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value now.

    >>> isinstance(hub_offline(), bool)
    True
    """
    return any(os.environ.get(var, "").strip().lower() in _TRUE
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    """The Hugging Face endpoint in use (``HF_ENDPOINT`` or https://huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The hub cache folder that will be searched (``cache_dir``, else ``HF_HUB_CACHE``/``HF_HOME``)."""
    if cache_dir is not None:
        return os.fspath(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def reachable(url: str, timeout: float | None = None) -> tuple[bool, str]:
    """Whether a TCP connection to ``url``'s host (or the HTTPS proxy) opens within ``timeout``.

    Name resolution has no time-out of its own in Python, so the probe runs in a daemon thread and
    is abandoned when it overruns. Returns ``(ok, reason)``; ``timeout`` defaults to
    :data:`PROBE_TIMEOUT_S`.
    """
    timeout = PROBE_TIMEOUT_S if timeout is None else float(timeout)
    target = _proxy_for(url) or url
    parts = urllib.parse.urlsplit(target if "://" in target else "http://" + target)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except Exception as exc:  # any failure means "not reachable"; the reason is reported
            result["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=probe, name="cfviz-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if result.get("ok"):
        return True, ""
    return False, result.get("error", f"no answer from {host}:{port} within {timeout:g} s")


def _proxy_for(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme or "https") or proxies.get("all")


def fetch_with_fallback(fetch: Callable[[bool], T], *, what: str, host_url: str, fix: str,
                        cache_hint: str) -> T:
    """Run ``fetch(local_only)`` under the offline/probe/cache rules of this module.

    ``what`` names what was looked for, ``fix`` says how to supply it; both go into the single
    error sentence. ``fetch`` must raise ``FileNotFoundError``/``OSError`` when files are missing.
    """
    why = "HF_HUB_OFFLINE is set" if hub_offline() else None
    if why is None:
        ok, reason = reachable(host_url)
        why = None if ok else f"{_host(host_url)} cannot be reached ({reason})"
    if why is not None:  # the local cache or nothing
        try:
            return fetch(True)
        except Exception as exc:
            if not _is_download_error(exc):
                raise
            raise ModelUnavailableError(f"{what} is not in the local cache ({cache_hint}) and {why}; {fix}") from None
    try:
        return fetch(False)
    except Exception as exc:
        if not _is_download_error(exc):
            raise
        try:  # e.g. a flaky connection after a good probe: the cache may still have it
            return fetch(True)
        except Exception:
            pass
        raise ModelUnavailableError(f"{what} could not be downloaded ({_short(exc)}); {fix}") from exc


def _is_download_error(exc: BaseException) -> bool:
    """Errors that mean "the files cannot be had" (not bugs): missing files, network, HTTP."""
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    try:
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        if isinstance(exc, (EntryNotFoundError, HfHubHTTPError)):
            return True
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    module = type(exc).__module__
    return module.startswith(("requests", "httpx", "urllib3", "huggingface_hub"))


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or url


def _short(exc: BaseException) -> str:
    """The first sentence of a library's error, as a clause: ``cannot find ...; ErrorType``."""
    text = " ".join(str(exc).split())
    first = text.split(". ")[0].rstrip(".")[:200]
    if len(first) > 1 and first[0].isupper() and first[1].islower():
        first = first[0].lower() + first[1:]
    return f"{first}; {type(exc).__name__}" if first else type(exc).__name__


def hub_snapshot(repo_id: str, *, revision: str | None, cache_dir: str | os.PathLike[str] | None,
                 allow_patterns: Sequence[str], ignore_patterns: Sequence[str], what: str, fix: str) -> Path:
    """Local folder with the wanted files of a hub repository (downloaded or from the cache)."""
    from huggingface_hub import snapshot_download

    def fetch(local_only: bool) -> Path:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                      local_files_only=local_only, allow_patterns=list(allow_patterns),
                                      ignore_patterns=list(ignore_patterns)))

    return fetch_with_fallback(fetch, what=what, host_url=hub_endpoint(), fix=fix,
                               cache_hint=hub_cache_dir(cache_dir))


def hub_file(repo_id: str, filenames: Sequence[str], *, revision: str | None,
             cache_dir: str | os.PathLike[str] | None, what: str, fix: str) -> Path:
    """Path of the first of ``filenames`` that the hub repository has (downloaded or cached)."""
    from huggingface_hub import hf_hub_download

    def fetch(local_only: bool) -> Path:
        last: Exception | None = None
        for name in filenames:
            try:
                return Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir,
                                            local_files_only=local_only))
            except Exception as exc:
                if not _is_download_error(exc):
                    raise
                last = exc
        assert last is not None
        raise last

    return fetch_with_fallback(fetch, what=what, host_url=hub_endpoint(), fix=fix,
                               cache_hint=hub_cache_dir(cache_dir))


def url_file(url: str, *, cache_dir: str | os.PathLike[str], sha256_prefix: str | None, what: str,
             fix: str, timeout: float = 60.0) -> Path:
    """A file downloaded from ``url`` into ``cache_dir`` (atomically), or the copy already there."""
    from cfviz.utils.io import atomic_path

    target = Path(cache_dir) / os.path.basename(urllib.parse.urlsplit(url).path)

    def fetch(local_only: bool) -> Path:
        if target.is_file() and _sha_ok(target, sha256_prefix):
            return target
        if local_only:
            raise FileNotFoundError(target)
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            if not _sha_ok(tmp, sha256_prefix):
                raise OSError(f"downloaded {url} but its SHA-256 does not start with {sha256_prefix}")
        return target

    return fetch_with_fallback(fetch, what=what, host_url=url, fix=fix, cache_hint=str(target.parent))


def _sha_ok(path: Path, prefix: str | None) -> bool:
    from cfviz.models.fingerprint import sha256_file

    return not prefix or sha256_file(path).startswith(prefix)
