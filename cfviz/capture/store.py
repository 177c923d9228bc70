"""The capture store on disk: one safetensors file + one JSON file per image, plus a store header.

Layout::

    STORE/
      store.json                    format, capture configuration, model, library versions
      entries/<key>.safetensors     tensors of one image (float16 maps; see below)
      entries/<key>.json            its metadata: image id, prompt, token ids, seed, timesteps, ...

Tensor names inside an entry (``S`` steps, ``K`` tokens, ``H`` heads, ``C`` channels)::

    attn/<layer>        (S, K, h, w)  or (S, H, K, h, w) when heads were kept
    feat/<block>        (S, C, h, w)
    clip/<name>         CLIP scores (see :class:`ClipScores`)
    <group>/<name>      any other array a method wants to keep with the image (e.g. maps/...)

Every file is written atomically and an entry counts only once its JSON exists (written last),
so a run can stop at any point and resume; shards of a run may write to one store side by side
(no shared index file is rewritten). Opening a store reads only the small JSON files; tensors are
read lazily, one name at a time, so an ablation over thousands of images never holds them all.
A store refuses entries written with a different configuration (:class:`StoreMismatchError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cfviz.capture.cache import CaptureCache, StepInfo
from cfviz.capture.tokens import TokenSelection
from cfviz.errors import StoreMismatchError
from cfviz.utils.env import library_versions
from cfviz.utils.io import atomic_write_json, save_safetensors

FORMAT = "cfviz-capture-store"
FORMAT_VERSION = 1


def entry_key(image_id: str) -> str:
    """A file-system-safe, collision-free file stem for an image id.

    >>> entry_key("bottle/test/broken_large/000")
    'bottle__test__broken_large__000-4672e5d1'
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id.replace("/", "__")).strip("._")[:120]
    digest = hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:8]
    return f"{safe}-{digest}"


@dataclass
class ClipScores:
    """CLIP window, patch and image scores of one image, in the capture-store format.

    Attributes
    ----------
    image:
        Image-level score (a 0-d or 1-element tensor / float).
    patch:
        Patch-level scores on the ViT grid, ``(gh, gw)``.
    windows:
        ``scale -> (n_windows,)`` window scores (scale = window side in patches).
    window_boxes:
        ``scale -> (n_windows, 4)`` integer boxes ``[row, col, height, width]`` in patches.
    maps:
        Named maps derived from the scores (e.g. ``"language"``, ``"visual"``), any 2-D shape.
    """

    image: Any
    patch: Any = None
    windows: dict[int, Any] = field(default_factory=dict)
    window_boxes: dict[int, Any] = field(default_factory=dict)
    maps: dict[str, Any] = field(default_factory=dict)

    def to_tensors(self, prefix: str = "clip") -> dict[str, Any]:
        import torch

        out = {f"{prefix}/image": torch.as_tensor(self.image, dtype=torch.float32).reshape(1)}
        if self.patch is not None:
            out[f"{prefix}/patch"] = torch.as_tensor(self.patch, dtype=torch.float32)
        for s, v in self.windows.items():
            out[f"{prefix}/window/{int(s)}"] = torch.as_tensor(v, dtype=torch.float32)
        for s, v in self.window_boxes.items():
            out[f"{prefix}/window_box/{int(s)}"] = torch.as_tensor(v, dtype=torch.int32)
        for name, v in self.maps.items():
            out[f"{prefix}/map/{name}"] = torch.as_tensor(v, dtype=torch.float32)
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Any], prefix: str = "clip") -> ClipScores:
        def group(kind: str) -> dict[str, Any]:
            p = f"{prefix}/{kind}/"
            return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}
        return cls(image=tensors[f"{prefix}/image"], patch=tensors.get(f"{prefix}/patch"),
                   windows={int(k): v for k, v in group("window").items()},
                   window_boxes={int(k): v for k, v in group("window_box").items()},
                   maps=group("map"))


class StoreEntry:
    """One image of a store, read lazily: metadata at once, tensors on request."""

    def __init__(self, store_path: Path, meta: dict[str, Any]) -> None:
        self._dir = store_path / "entries"
        self.meta = meta

    @property
    def image_id(self) -> str:
        return str(self.meta["image_id"])

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form metadata given when the entry was added (label, category, seed, ...)."""
        return dict(self.meta.get("metadata", {}))

    @property
    def steps(self) -> list[StepInfo]:
        return [StepInfo.from_json(s) for s in self.meta.get("steps", [])]

    @property
    def timesteps(self) -> list[Any]:
        return [s.timestep for s in self.steps]

    @property
    def names(self) -> list[str]:
        """Names of the tensors stored for this image."""
        return sorted(self.meta.get("tensors", {}))

    @property
    def path(self) -> Path:
        return self._dir / f"{self.meta['key']}.safetensors"

    def load(self, names: str | Sequence[str] | None = None) -> dict[str, Any]:
        """Read tensors by name (all when ``names`` is None) without touching the others."""
        from safetensors import safe_open

        want = self.names if names is None else ([names] if isinstance(names, str) else list(names))
        missing = [n for n in want if n not in self.meta.get("tensors", {})]
        if missing:
            raise KeyError(f"{self.image_id}: no tensors {missing}; stored: {self.names}")
        with safe_open(str(self.path), framework="pt") as fh:
            return {n: fh.get_tensor(n) for n in want}

    def __getitem__(self, name: str) -> Any:
        return self.load(name)[name]

    def cache(self, layers: Sequence[str] | None = None, blocks: Sequence[str] | None = None) -> CaptureCache:
        """Rebuild a one-row :class:`CaptureCache` from the stored maps (only the names asked for)."""
        all_layers = [n[len("attn/"):] for n in self.names if n.startswith("attn/")]
        all_blocks = [n[len("feat/"):] for n in self.names if n.startswith("feat/")]
        layers = all_layers if layers is None else list(layers)
        blocks = all_blocks if blocks is None else list(blocks)
        tensors = self.load([f"attn/{n}" for n in layers] + [f"feat/{n}" for n in blocks])
        steps = self.steps
        tok = self.meta.get("tokens")
        tokens = None if tok is None else TokenSelection(
            tuple(tok["labels"]), tuple(tok["prompts"]), tuple(tuple(t) for t in tok["token_ids"]),
            tuple(tuple(tuple(c) for c in cols) for cols in tok["columns"]), int(tok["sequence_length"]))
        settings = dict(self.meta.get("capture", {}))

        def per_step(t: Any) -> dict[int, Any]:
            return {s.step: t[i].unsqueeze(0) for i, s in enumerate(steps)}
        return CaptureCache(
            layers=layers, blocks=blocks, tokens=tokens, heads=str(settings.get("heads", "mean")),
            settings=settings, metadata=self.metadata, steps=steps,
            attention={n: per_step(tensors[f"attn/{n}"]) for n in layers},
            features={n: per_step(tensors[f"feat/{n}"]) for n in blocks},
        )

    def clip(self, prefix: str = "clip") -> ClipScores:
        """The CLIP scores stored with this image."""
        names = [n for n in self.names if n.startswith(prefix + "/")]
        if not names:
            raise KeyError(f"{self.image_id}: no CLIP scores stored under {prefix!r}")
        return ClipScores.from_tensors(self.load(names), prefix)

    def __repr__(self) -> str:
        return f"StoreEntry({self.image_id!r}, {len(self.names)} tensors, steps={len(self.steps)})"


class CaptureStore:
    """A folder of per-image captures that notebooks replay without re-running models.

    Parameters
    ----------
    path:
        The store folder (created when missing, unless ``readonly``).
    config:
        The configuration that produced the entries: model id and revision, prompt template,
        timesteps, image size, capture settings, ... Opening an existing store with a different
        configuration raises :class:`StoreMismatchError` listing the differences, so entries made
        with different settings are never mixed. ``None`` opens whatever is there.
    readonly:
        Open for reading only (no folder is created).

    Example
    -------
    >>> import tempfile, torch
    >>> from cfviz.capture.store import CaptureStore, ClipScores
    >>> store = CaptureStore(tempfile.mkdtemp(), config={"model": "tiny", "timesteps": [100]})
    >>> store.add("grass/test/hole/000", clip=ClipScores(image=0.7, patch=torch.rand(15, 15)),
    ...           metadata={"label": 1})
    StoreEntry('grass/test/hole/000', 2 tensors, steps=0)
    >>> CaptureStore(store.path, readonly=True)["grass/test/hole/000"].clip().patch.shape
    torch.Size([15, 15])
    """

    def __init__(self, path: str | Path, config: Mapping[str, Any] | None = None, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        header = self.path / "store.json"
        if header.exists():
            try:
                self.header = json.loads(header.read_text())
            except json.JSONDecodeError as exc:
                raise StoreMismatchError(f"{header} is not valid JSON ({exc}); the store is damaged — "
                                         "move it away and re-run to rebuild it") from exc
            if self.header.get("format") != FORMAT:
                raise StoreMismatchError(f"{header} is not a cfviz capture store (format "
                                         f"{self.header.get('format')!r}); choose another folder")
            if config is not None:
                _compare(self.header.get("config", {}), _jsonable(config), header)
        else:
            if readonly:
                raise FileNotFoundError(f"no capture store at {self.path} (missing {header}); "
                                        "create it by running a capture with this folder as the store")
            self.header = {"format": FORMAT, "format_version": FORMAT_VERSION,
                           "config": _jsonable(config or {}),
                           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "library_versions": library_versions()}
            (self.path / "entries").mkdir(parents=True, exist_ok=True)
            atomic_write_json(header, self.header)
        self._index: dict[str, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ reading
    @property
    def config(self) -> dict[str, Any]:
        return dict(self.header.get("config", {}))

    def _load_index(self) -> dict[str, dict[str, Any]]:
        if self._index is None:
            index: dict[str, dict[str, Any]] = {}
            for meta_path in sorted((self.path / "entries").glob("*.json")):
                meta = json.loads(meta_path.read_text())
                index[meta["image_id"]] = meta
            self._index = index
        return self._index

    def refresh(self) -> None:
        """Re-scan the entries (after another process added some)."""
        self._index = None

    @property
    def ids(self) -> list[str]:
        """Image ids with a complete entry, sorted."""
        return sorted(self._load_index())

    def __len__(self) -> int:
        return len(self._load_index())

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._load_index()

    def __getitem__(self, image_id: str) -> StoreEntry:
        index = self._load_index()
        if image_id not in index:
            raise KeyError(f"{image_id!r} is not in the store at {self.path} ({len(index)} entries)")
        return StoreEntry(self.path, index[image_id])

    def __iter__(self) -> Iterator[StoreEntry]:
        for image_id in self.ids:
            yield self[image_id]

    def missing(self, image_ids: Sequence[str]) -> list[str]:
        """The ids not yet stored, in the given order (what a resumed run still has to do)."""
        index = self._load_index()
        return [i for i in image_ids if i not in index]

    def index(self) -> Any:
        """A pandas DataFrame with one row per entry: image id, steps, tensors and metadata columns."""
        import pandas as pd

        rows = []
        for image_id, meta in sorted(self._load_index().items()):
            row = {"image_id": image_id, "n_steps": len(meta.get("steps", [])),
                   "timesteps": [s["timestep"] for s in meta.get("steps", [])],
                   "n_tensors": len(meta.get("tensors", {})), "nbytes": meta.get("nbytes", 0)}
            row.update(meta.get("metadata", {}))
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return f"CaptureStore({str(self.path)!r}, {len(self)} entries)"

    # ------------------------------------------------------------------ writing
    def add(self, image_id: str, cache: CaptureCache | None = None, *, clip: ClipScores | None = None,
            arrays: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None,
            overwrite: bool = False) -> StoreEntry:
        """Write one image's entry atomically.

        Parameters
        ----------
        image_id:
            The sample's id (e.g. ``"grass/test/hole/003"``).
        cache:
            A one-row :class:`CaptureCache` (use ``cache.select_rows(i)`` for row ``i`` of a batch).
        clip:
            CLIP scores of the image (:class:`ClipScores`).
        arrays:
            Any other named tensors, stored under their names (use a ``group/name`` form).
        metadata:
            JSON-able facts about the image and run (label, category, seed, paths, ...).
        overwrite:
            Replace an existing entry (otherwise adding an existing id is an error).
        """
        import torch

        if self.readonly:
            raise PermissionError(f"the store at {self.path} was opened read-only")
        if image_id in self._load_index() and not overwrite:
            raise FileExistsError(f"{image_id!r} is already in the store at {self.path}; "
                                  "pass overwrite=True to replace it or skip it with store.missing(ids)")
        tensors: dict[str, Any] = {}
        meta: dict[str, Any] = {"image_id": image_id, "key": entry_key(image_id),
                                "metadata": _jsonable(dict(metadata or {})),
                                "written": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if cache is not None:
            if cache.batch_size > 1:
                raise ValueError(f"cache holds {cache.batch_size} rows; store one image per entry "
                                 "(cache.select_rows(i))")
            self._check_capture(cache.settings)
            steps = [s.step for s in cache.steps]
            for name, per in cache.attention.items():
                tensors[f"attn/{name}"] = torch.stack([per[s][0] for s in steps])
            for name, per in cache.features.items():
                tensors[f"feat/{name}"] = torch.stack([per[s][0] for s in steps])
            meta["steps"] = [s.to_json() for s in cache.steps]
            meta["capture"] = _jsonable(cache.settings)
            meta["tokens"] = None if cache.tokens is None else cache.tokens.to_json()
            meta["metadata"] = {**_jsonable(cache.metadata), **meta["metadata"]}
        if clip is not None:
            tensors.update(clip.to_tensors())
        for name, value in (arrays or {}).items():
            if name in tensors:
                raise ValueError(f"array name {name!r} clashes with a captured tensor")
            tensors[name] = torch.as_tensor(value)
        if not tensors:
            raise ValueError("nothing to store: pass cache=..., clip=... or arrays=...")
        meta["tensors"] = {n: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                           for n, t in tensors.items()}
        meta["nbytes"] = int(sum(t.numel() * t.element_size() for t in tensors.values()))
        entries = self.path / "entries"
        save_safetensors(entries / f"{meta['key']}.safetensors", tensors, {"image_id": image_id})
        atomic_write_json(entries / f"{meta['key']}.json", meta)  # last: marks the entry complete
        self._load_index()[image_id] = meta
        return StoreEntry(self.path, meta)

    def add_rows(self, cache: CaptureCache, image_ids: Sequence[str], *,
                 metadata: Sequence[Mapping[str, Any]] | None = None, overwrite: bool = False) -> list[StoreEntry]:
        """Split a batched cache into one entry per row (``image_ids[i]`` for row ``i``)."""
        if len(image_ids) != cache.batch_size:
            raise ValueError(f"{len(image_ids)} image ids for a cache of {cache.batch_size} rows")
        metas = list(metadata) if metadata is not None else [{}] * len(image_ids)
        return [self.add(i, cache.select_rows(r), metadata=m, overwrite=overwrite)
                for r, (i, m) in enumerate(zip(image_ids, metas))]

    def _check_capture(self, settings: Mapping[str, Any]) -> None:
        """The first cache fixes the store's capture settings; later ones must match them."""
        settings = _jsonable(dict(settings))
        known = self.header.get("capture")
        header = self.path / "store.json"
        if known is None:
            self.header["capture"] = settings
            atomic_write_json(header, self.header)
        else:
            _compare(known, settings, header, what="capture settings")


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so comparisons see what is on disk (tuples become lists...)."""
    from cfviz.utils.io import _json_default

    return json.loads(json.dumps(obj, default=_json_default, sort_keys=True))


def _compare(stored: Mapping[str, Any], given: Mapping[str, Any], header: Path, what: str = "configuration") -> None:
    keys = sorted(set(stored) | set(given))
    diffs = [k for k in keys if stored.get(k, "<absent>") != given.get(k, "<absent>")]
    if diffs:
        shown = "; ".join(f"{k}: stored {stored.get(k, '<absent>')!r} vs given {given.get(k, '<absent>')!r}"
                          for k in diffs[:5])
        raise StoreMismatchError(
            f"the store at {header.parent} was written with a different {what} ({shown}); "
            "use a new store folder for this configuration (or delete the old one) — entries are never mixed")
