"""The capture store on disk: one safetensors file + one JSON file per image, plus a store header.

Layout::

    STORE/
      store.json                    format, configuration (models, weights, settings), library versions
      entries/<key>.safetensors     tensors of one image (float16 maps; see below)
      entries/<key>.json            its metadata: image id, prompt, token ids, seed, timesteps,
                                    layer and block order, size and SHA-256 of the tensors file

Tensor names inside an entry (``S`` steps, ``K`` tokens, ``H`` heads, ``C`` channels)::

    attn/<layer>        (S, K, h, w)  or (S, H, K, h, w) when heads were kept
    feat/<block>        (S, C, h, w)
    clip/<name>         CLIP scores (see :class:`ClipScores`)
    <group>/<name>      any other array a method wants to keep with the image (e.g. maps/...)

Every file is written atomically and an entry counts only once its JSON exists (written last),
so a run can stop at any point and resume; shards of a run may write to one store side by side
(no shared index file is rewritten). Opening a store reads only the small JSON files; tensors are
read lazily, one name at a time, so an ablation over thousands of images never holds them all;
:meth:`CaptureStore.to_xarray` gives one tensor of chosen images, labelled, to xarray.
A store refuses entries written with a different configuration (:class:`StoreMismatchError`,
naming only the settings that differ, old -> new).

Identity by content: each entry records the identity it was written under (``identity``: the
store's configuration and the facts confirmed once the models loaded, e.g. hub commits) and a
fingerprint of every input it was computed from (``inputs``, e.g. the SHA-256 of the image file,
given by the writer). A store whose ``store.json`` was lost or rebuilt still refuses entries of
another identity, naming the entry and the settings that differ; the writer checks ``inputs``
when it reuses an entry (:attr:`StoreEntry.inputs`). Entries of older stores carry neither: the
header alone speaks for their identity, and a writer that needs ``inputs`` says how to recompute.

The header is written with the first entry, not when the store is opened: a run that fails
before producing anything (a typo in a model name) leaves no store behind that would refuse the
corrected run. Files hold no time stamps and no absolute paths of the machine that wrote them, so
the same data, models and settings give byte-identical stores, however the run was cut.

A full disk or the file-size limit stops a write with :class:`~cfviz.errors.WriteError` naming the
store, the entry, the file, its folder and the bytes written; the entry is then not added and the
store stays valid (a rerun resumes).

An entry can be rewritten in place (:meth:`CaptureStore.rewrite`: some tensors dropped, others
added, e.g. by the compact store form, :mod:`cfviz.evaluation.compact`). The new tensors go to a
new file named by its digest (``<key>.<sha256[:12]>.safetensors``, recorded in the JSON's
``file.name``), then the JSON is replaced (the commit), then the old file is deleted: a rewrite
cut at any point leaves either the old entry or the new one, never a mix.

A damaged entry (a tensors file of the wrong size or digest, a JSON file that does not parse)
raises :class:`StoreDamagedError` naming the entry and the file; ``repair=True`` deletes damaged
entries instead, so that a run recomputes them. Temporary files of killed writers are removed
when a store is opened for writing (see :func:`cfviz.utils.io.stale_temp_files`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfviz.capture.cache import CaptureCache, StepInfo
from cfviz.capture.labelled import import_xarray
from cfviz.capture.tokens import TokenSelection
from cfviz.errors import CfvizError, StoreMismatchError, WriteError
from cfviz.utils.env import library_versions
from cfviz.utils.io import atomic_write_bytes, atomic_write_json, remove_stale_temp_files

FORMAT = "cfviz-capture-store"
FORMAT_VERSION = 1

#: How a refused or damaged store tells a user what to do (callers may phrase it for their interface).
REPAIR_HINT = "rerun with --repair (Python: repair=True) to delete damaged entries and recompute them"

#: Header keys that are not part of the identity an entry records (the capture settings are in the entry itself).
_NOT_IDENTITY = ("format", "format_version", "library_versions", "capture")

#: How a setting that differs may be fixed: flattened config path -> (stored value -> the fix, in words).
Hints = Mapping[str, Any]


class StoreDamagedError(CfvizError, ValueError):
    """An entry of a capture store is unreadable (a killed writer, a full disk, an edited file)."""


def tensors_file_name(meta: Mapping[str, Any]) -> str:
    """The tensors file of an entry: ``<key>.safetensors``, or the name a rewrite recorded."""
    return str((meta.get("file") or {}).get("name") or f"{meta['key']}.safetensors")


def _entry_files(folder: Path, key: str) -> list[Path]:
    """Every tensors file of entry ``key`` in ``folder`` (the original and any rewritten one)."""
    pattern = re.compile(rf"{re.escape(key)}(\.[0-9a-f]{{12}})?\.safetensors")
    return sorted(p for p in folder.glob(f"{glob.escape(key)}.*safetensors") if pattern.fullmatch(p.name))


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
    def inputs(self) -> dict[str, str]:
        """Fingerprints of the inputs the entry was computed from (``{}`` for entries of older stores).

        E.g. ``{"image": "sha256:..."}``: what :func:`cfviz.evaluation.store_check.stale_entries`
        compares with the bytes of the image file before the entry is reused.
        """
        return dict(self.meta.get("inputs") or {})

    @property
    def identity(self) -> dict[str, Any] | None:
        """The store identity the entry was written under (None for entries of older stores)."""
        return self.meta.get("identity")

    @property
    def steps(self) -> list[StepInfo]:
        return [StepInfo.from_json(s) for s in self.meta.get("steps", [])]

    @property
    def timesteps(self) -> list[Any]:
        return [s.timestep for s in self.steps]

    @property
    def names(self) -> list[str]:
        """Names of the tensors stored for this image (sorted)."""
        return sorted(self.meta.get("tensors", {}))

    @property
    def layers(self) -> list[str]:
        """Attention layers in the order they were captured."""
        return _ordered(self.meta.get("layers"), [n[len("attn/"):] for n in self.names if n.startswith("attn/")])

    @property
    def blocks(self) -> list[str]:
        """Feature blocks in the order they were captured."""
        return _ordered(self.meta.get("blocks"), [n[len("feat/"):] for n in self.names if n.startswith("feat/")])

    @property
    def path(self) -> Path:
        return self._dir / tensors_file_name(self.meta)

    def load(self, names: str | Sequence[str] | None = None) -> dict[str, Any]:
        """Read tensors by name (all when ``names`` is None) without touching the others."""
        from safetensors import safe_open

        want = self.names if names is None else ([names] if isinstance(names, str) else list(names))
        missing = [n for n in want if n not in self.meta.get("tensors", {})]
        if missing:
            raise KeyError(f"{self.image_id}: no tensors {missing}; stored: {self.names}")
        try:
            with safe_open(str(self.path), framework="pt") as fh:
                return {n: fh.get_tensor(n) for n in want}
        except Exception as exc:  # safetensors raises its own types, OSError, or worse on garbage
            raise StoreDamagedError(f"capture store entry {self.image_id!r} is damaged: {self.path} cannot be read "
                                    f"({type(exc).__name__}: {exc}); {REPAIR_HINT}") from exc

    def __getitem__(self, name: str) -> Any:
        return self.load(name)[name]

    def cache(self, layers: Sequence[str] | None = None, blocks: Sequence[str] | None = None) -> CaptureCache:
        """Rebuild a one-row :class:`CaptureCache` from the stored maps (only the names asked for)."""
        layers = self.layers if layers is None else list(layers)
        blocks = self.blocks if blocks is None else list(blocks)
        tensors = self.load([f"attn/{n}" for n in layers] + [f"feat/{n}" for n in blocks])
        steps = self.steps
        tok = self.meta.get("tokens")
        tokens = None if tok is None else TokenSelection.from_json(tok)
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
        The store folder (created with the first entry, unless ``readonly``).
    config:
        The configuration that produced the entries: model id and revision, prompt template,
        timesteps, image size, capture settings, ... Opening an existing store with a different
        configuration raises :class:`StoreMismatchError` naming the settings that differ (old ->
        new), so entries made with different settings are never mixed. ``None`` opens whatever
        is there.
    readonly:
        Open for reading only (nothing is created or removed).
    repair:
        Delete damaged entries (and verify the SHA-256 of every tensors file) instead of raising
        :class:`StoreDamagedError`; the ids deleted are in :attr:`repaired`, missing for a run to
        recompute.

    Every entry's recorded identity must be the store's (the header's configuration, or
    ``config`` when the header is missing); see :meth:`require` for checks that leave some
    settings aside.

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

    def __init__(self, path: str | Path, config: Mapping[str, Any] | None = None, *, readonly: bool = False,
                 repair: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.repair = repair
        self.repaired: list[str] = []  #: files of damaged entries deleted by ``repair``
        self._index: dict[str, dict[str, Any]] | None = None
        self._config_known = False  # a header or a given config says what entries must have been written with
        self._ignore: tuple[str, ...] = ()
        self._hints: dict[str, Any] = {}
        header = self.path / "store.json"
        if header.exists():
            self.header = self._read_header(header)
            self._header_written = self._config_known = True
        else:
            if readonly and not (self.path / "entries").is_dir():
                raise FileNotFoundError(f"no capture store at {self.path} (missing {header}); "
                                        "create it by running a capture with this folder as the store")
            # no time stamp: a store is a function of its inputs (byte-identical when rebuilt)
            self.header = {"format": FORMAT, "format_version": FORMAT_VERSION,
                           "config": {}, "library_versions": library_versions()}
            self._header_written = False  # written with the first entry: a failed run claims nothing
        if config is not None:
            self.require(config)
        if not readonly:
            remove_stale_temp_files(self.path)
            remove_stale_temp_files(self.path / "entries")

    def require(self, config: Mapping[str, Any], *, ignore: Sequence[str] = (), hints: Hints | None = None) -> None:
        """Refuse (:class:`StoreMismatchError`) unless the store and each entry were written with ``config``.

        ``ignore``: flattened setting paths (``"cpu_threads"``, ``"models.device_type"``) whose
        differences do not count, e.g. settings that matter only when models run, for a run that
        only reads entries. ``hints`` maps a path to a function of its stored value that says how
        to run with it (a flag or an environment variable), added to the refusal. A store without
        a header adopts ``config`` (written with its first entry).

        >>> import tempfile
        >>> store = CaptureStore(tempfile.mkdtemp(), config={"threads": 4, "steps": [100]})
        >>> _ = store.add("a", arrays={"x/y": __import__("torch").ones(1)})
        >>> CaptureStore(store.path).require({"threads": 2, "steps": [100]}, ignore=["threads"])
        >>> CaptureStore(store.path).require({"threads": 2, "steps": [100]})
        Traceback (most recent call last):
        ...
        cfviz.errors.StoreMismatchError: the capture store ... with another configuration (threads: 4 -> 2); ...
        """
        config = _jsonable(dict(config))
        self._ignore = tuple(ignore)
        if self._header_written:
            _compare(self.header.get("config", {}), config, self.path / "store.json", ignore=self._ignore,
                     hints=hints)
        else:
            self.header["config"] = config
        self._config_known = True
        self._hints = dict(hints or {})
        if self._index is not None:
            self._check_entries(self._index)

    def identity(self) -> dict[str, Any]:
        """What an entry written now records as its identity: the configuration and the confirmed facts."""
        return {k: v for k, v in self.header.items() if k not in _NOT_IDENTITY}

    def _check_entries(self, index: Mapping[str, Mapping[str, Any]]) -> None:
        """Every entry that records its identity must have the store's (the first entry's when nothing says)."""
        reference = self.identity() if self._config_known else None
        for image_id, meta in index.items():
            recorded = meta.get("identity")
            if not isinstance(recorded, Mapping):
                continue  # an entry of an older store: the header alone speaks for it
            if reference is None:
                reference, first = dict(recorded), image_id
                continue
            if recorded == reference:
                continue
            diffs = _differences(recorded.get("config", {}), reference.get("config", {}), self._ignore)
            for key in sorted((set(recorded) & set(reference)) - {"config"}):
                diffs += config_differences({key: recorded[key]}, {key: reference[key]})
            if not diffs:
                continue
            if self._config_known:
                against = "its store.json" if self._header_written else "this run"
            else:
                against = f"entry {first!r}"
            lost = "" if self._header_written else ("the store has no store.json, so its entries say which settings "
                                                    "it holds, and ")
            told = _told(self._hints, recorded.get("config", {}), diffs)
            raise StoreMismatchError(
                f"capture store entry {image_id!r} in {self.path} was computed with another configuration than "
                f"{against} ({_shown(diffs)}); {lost}entries are never mixed: use another store folder (--store, "
                f"or another --out), or run with the entry's settings" + (f" ({told})" if told else ""))

    @staticmethod
    def _read_header(header: Path) -> dict[str, Any]:
        try:
            data = json.loads(header.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreMismatchError(f"{header} is not valid JSON ({exc}); the store is damaged — "
                                     "move it away and re-run to rebuild it") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StoreMismatchError(f"{header} is not a cfviz capture store (format "
                                     f"{data.get('format') if isinstance(data, dict) else None!r}); "
                                     "choose another folder")
        return data

    def confirm(self, key: str, value: Mapping[str, Any]) -> None:
        """Record facts known only once the models are loaded (e.g. the commit a hub id resolved to).

        The first run records them; later runs must agree (:class:`StoreMismatchError` otherwise).
        """
        value = _jsonable(dict(value))
        header = self.path / "store.json"
        if header.exists():  # another process may have written it meanwhile
            self.header = self._read_header(header)
            self._header_written = True
        if key in self.header:
            _compare({key: self.header[key]}, {key: value}, header)
        else:
            self.header[key] = value
            if self._header_written:
                self._write_file(header, self.header)
        if self._index is not None:  # entries written before the header was lost carry their own value
            self._check_entries(self._index)

    def _write_header(self) -> None:
        """Write the header before the first entry (checking a header another shard wrote meanwhile)."""
        header = self.path / "store.json"
        if header.exists():
            on_disk = self._read_header(header)
            _compare(on_disk.get("config", {}), self.header.get("config", {}), header)
            if "capture" in on_disk and "capture" in self.header:
                _compare({"capture": on_disk["capture"]}, {"capture": self.header["capture"]}, header,
                         what="capture settings")
            self.header = {**self.header, **on_disk}
        else:
            (self.path / "entries").mkdir(parents=True, exist_ok=True)
            self._write_file(header, self.header)
        self._header_written = True

    def _write_file(self, path: Path, data: bytes | Mapping[str, Any], image_id: str | None = None, *,
                    change: str = "added") -> None:
        """Write a store file (bytes, or JSON) atomically; no room for it: a :class:`WriteError` naming the store."""
        try:
            if isinstance(data, bytes):
                atomic_write_bytes(path, data)
            else:
                atomic_write_json(path, data)
        except WriteError as exc:
            what = f"could not take entry {image_id!r}" if image_id is not None else "could not write its header"
            err = WriteError(f"the capture store {self.path} {what}: {exc}; the store is still valid (the "
                             f"{len(self._load_index())} entries before stay readable, this one was not {change}) "
                             "and a rerun resumes once there is room")
            err.errno = exc.errno
            raise err from exc

    # ------------------------------------------------------------------ reading
    @property
    def config(self) -> dict[str, Any]:
        return dict(self.header.get("config", {}))

    def _load_index(self) -> dict[str, dict[str, Any]]:
        if self._index is None:
            index: dict[str, dict[str, Any]] = {}
            entries = self.path / "entries"
            for meta_path in sorted(entries.glob("*.json")) if entries.is_dir() else []:
                meta, problem = _read_entry(meta_path, verify=self.repair)
                if problem is None:
                    index[meta["image_id"]] = meta
                    continue
                name = meta.get("image_id") if meta else None
                what = f"capture store entry {name!r}" if name else f"capture store entry {meta_path.stem}"
                if not self.repair:
                    raise StoreDamagedError(f"{what} is damaged: {problem}; {REPAIR_HINT}")
                if self.readonly:
                    raise StoreDamagedError(f"{what} is damaged: {problem}; open the store for writing "
                                            "with repair=True to delete it")
                for f in (meta_path, *_entry_files(entries, meta_path.stem)):
                    if f.exists():
                        f.unlink()
                        self.repaired.append(f.name)
            self._check_entries(index)
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

    def to_xarray(self, name: str, image_ids: str | Sequence[str] | None = None) -> Any:
        """One captured tensor of some images as a float32 ``xarray.DataArray`` (``pip install xarray``).

        ``name`` is an attention layer's ``attn/<layer>``, dims ``(image_id, step, [head,] token, h, w)``,
        or a feature block's ``feat/<block>``, dims ``(image_id, step, channel, h, w)``; ``step``
        carries the ``timestep`` coordinate and ``token`` the token labels, as in
        :meth:`LabelledMaps.to_xarray`. ``image_ids`` (default: every entry, all read into memory)
        must share steps and tokens. ``attrs`` hold the tensor name, the store's path, configuration
        and capture settings (JSON text, so that ``to_netcdf`` writes them).

        >>> import tempfile, torch
        >>> from cfviz.capture import CaptureCache, StepInfo
        >>> store = CaptureStore(tempfile.mkdtemp(), config={"model": "tiny"})
        >>> step = StepInfo(step=0, timestep=900.0, rows=(0,), batch_size=1, sample_size=(4, 4))
        >>> for i in ("a", "b"):  # two images, one layer, one step, two tokens (unnamed: "#0", "#1")
        ...     _ = store.add(i, CaptureCache(["up.attn2"], [], None, "mean", steps=[step],
        ...                                   attention={"up.attn2": {0: torch.rand(1, 2, 4, 4)}}))
        >>> x = store.to_xarray("attn/up.attn2")
        >>> x.dims, x.swap_dims(step="timestep").sel(image_id="b", timestep=900.0, token="#1").shape
        (('image_id', 'step', 'token', 'h', 'w'), (4, 4))
        """
        xarray = import_xarray("CaptureStore.to_xarray")
        group, _, part = name.partition("/")
        if group not in ("attn", "feat") or not part:
            raise ValueError(f"to_xarray takes one captured tensor, 'attn/<layer>' or 'feat/<block>', got {name!r}")
        ids = self.ids if image_ids is None else [image_ids] if isinstance(image_ids, str) else list(image_ids)
        if not ids:
            raise ValueError(f"to_xarray needs at least one image; the store at {self.path} has {len(self)} entries")
        arrays = []
        for image_id in ids:
            if group == "attn":
                maps = self[image_id].cache(layers=[part], blocks=[]).attention_maps().isel(layer=0, batch=0)
            else:
                maps = self[image_id].cache(layers=[], blocks=[part]).feature_maps(part).isel(batch=0)
            arrays.append(maps.to_xarray())
        attrs = {"tensor": name, "store": str(self.path), "config": json.dumps(self.config, sort_keys=True),
                 "capture": json.dumps(self.header.get("capture"), sort_keys=True)}
        return (xarray.concat(arrays, dim="image_id", coords="different", compat="equals", join="exact")
                .assign_coords(image_id=ids).assign_attrs(attrs))

    # ------------------------------------------------------------------ writing
    def add(self, image_id: str, cache: CaptureCache | None = None, *, clip: ClipScores | None = None,
            arrays: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None,
            inputs: Mapping[str, str] | None = None, overwrite: bool = False) -> StoreEntry:
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
        inputs:
            Fingerprints of what the entry was computed from (``{"image": "sha256:..."}``), for a
            writer to check before reusing the entry (:attr:`StoreEntry.inputs`).
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
        # no time stamp and nothing of the writing machine: equal inputs give equal bytes
        meta: dict[str, Any] = {"image_id": image_id, "key": entry_key(image_id),
                                "metadata": _jsonable(dict(metadata or {}))}
        if inputs:
            meta["inputs"] = {str(k): str(v) for k, v in sorted(inputs.items())}
        if cache is not None:
            if cache.batch_size > 1:
                raise ValueError(f"cache holds {cache.batch_size} rows; store one image per entry "
                                 "(cache.select_rows(i))")
            self._check_capture(cache.settings)
            steps = [s.step for s in cache.steps]
            layers = _ordered(cache.layers, list(cache.attention))
            blocks = _ordered(cache.blocks, list(cache.features))
            for name in layers:
                tensors[f"attn/{name}"] = torch.stack([cache.attention[name][s][0] for s in steps])
            for name in blocks:
                tensors[f"feat/{name}"] = torch.stack([cache.features[name][s][0] for s in steps])
            meta["layers"], meta["blocks"] = layers, blocks  # capture order (tensor names are sorted)
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
        from safetensors.torch import save

        data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata={"image_id": image_id})
        meta["file"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}  # damage shows
        if not self._header_written:
            self._write_header()
        meta["identity"] = self.identity()  # after the header: a shard's header may have been adopted
        entries = self.path / "entries"
        entries.mkdir(parents=True, exist_ok=True)
        old = self._load_index().get(image_id)
        self._write_file(entries / f"{meta['key']}.safetensors", data, image_id)
        self._write_file(entries / f"{meta['key']}.json", meta, image_id)  # last: marks it complete
        if old is not None and tensors_file_name(old) != tensors_file_name(meta):
            (entries / tensors_file_name(old)).unlink(missing_ok=True)  # a rewritten entry replaced
        self._load_index()[image_id] = meta
        return StoreEntry(self.path, meta)

    def rewrite(self, image_id: str, *, drop: Sequence[str] = (), arrays: Mapping[str, Any] | None = None,
                meta: Mapping[str, Any] | None = None) -> StoreEntry:
        """Rewrite an entry atomically: tensors whose names start with a ``drop`` prefix go, ``arrays`` join.

        ``meta`` adds (or replaces) top-level keys of the entry's JSON. The new tensors file is
        named by its digest, written before the JSON that names it; the old file is deleted last.
        A rewrite cut at any point leaves the old entry or the new one (see the module docstring),
        and the same rewrite gives the same bytes. Layer and block lists keep only what remains.

        >>> import tempfile, torch
        >>> store = CaptureStore(tempfile.mkdtemp(), config={"m": 1})
        >>> _ = store.add("a", arrays={"feat/x": torch.zeros(2, 3), "keep/y": torch.ones(1)})
        >>> store.rewrite("a", drop=["feat/"], arrays={"maps/z": torch.ones(2)}).names
        ['keep/y', 'maps/z']
        """
        import torch
        from safetensors.torch import save

        if self.readonly:
            raise PermissionError(f"the store at {self.path} was opened read-only")
        old = self[image_id].meta
        keep = [n for n in old.get("tensors", {}) if not any(n.startswith(p) for p in drop)]
        tensors = StoreEntry(self.path, old).load(keep) if keep else {}
        for name, value in (arrays or {}).items():
            tensors[name] = torch.as_tensor(value)
        if not tensors:
            raise ValueError(f"rewriting {image_id!r} would leave no tensors")
        new = {**old, **_jsonable(dict(meta or {}))}
        new["tensors"] = {n: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                          for n, t in tensors.items()}
        new["nbytes"] = int(sum(t.numel() * t.element_size() for t in tensors.values()))
        for kind, prefix in (("layers", "attn/"), ("blocks", "feat/")):
            if isinstance(old.get(kind), list):
                new[kind] = [n for n in old[kind] if prefix + n in tensors]
        data = save({k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())},
                    metadata={"image_id": image_id})
        digest = hashlib.sha256(data).hexdigest()
        name = f"{old['key']}.{digest[:12]}.safetensors"
        new["file"] = {"bytes": len(data), "sha256": digest, "name": name}
        entries = self.path / "entries"
        self._write_file(entries / name, data, image_id, change="changed")
        self._write_file(entries / f"{old['key']}.json", new, image_id, change="changed")  # the commit: names it
        self.remove_orphans([image_id], metas={image_id: new})
        self._load_index()[image_id] = new
        return StoreEntry(self.path, new)

    def remove(self, image_id: str) -> None:
        """Delete an entry: its JSON first (the entry no longer counts), then its tensors files."""
        if self.readonly:
            raise PermissionError(f"the store at {self.path} was opened read-only")
        meta = self[image_id].meta
        entries = self.path / "entries"
        (entries / f"{meta['key']}.json").unlink(missing_ok=True)  # another process may have removed it
        for f in _entry_files(entries, meta["key"]):
            f.unlink(missing_ok=True)
        del self._load_index()[image_id]

    def remove_orphans(self, image_ids: Sequence[str], *, metas: Mapping[str, Any] | None = None) -> list[str]:
        """Delete tensors files of these entries that their JSON does not name (a rewrite cut short).

        Only the given entries are looked at: another process may be writing other entries (its
        tensors file exists a moment before its JSON). Returns the names deleted.
        """
        entries = self.path / "entries"
        index = self._load_index()
        removed = []
        for image_id in image_ids:
            meta = (metas or {}).get(image_id) or index.get(image_id)
            if meta is None:
                continue
            named = tensors_file_name(meta)
            for f in _entry_files(entries, meta["key"]):
                if f.name != named:
                    f.unlink(missing_ok=True)
                    removed.append(f.name)
        return removed

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
            if self._header_written:
                self._write_file(header, self.header)
        else:
            _compare(known, settings, header, what="capture settings")


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so comparisons see what is on disk (tuples become lists...)."""
    from cfviz.utils.io import _json_default

    return json.loads(json.dumps(obj, default=_json_default, sort_keys=True))


def _ordered(order: Any, names: Sequence[str]) -> list[str]:
    """``names`` in the recorded ``order`` (sorted names for entries written without one)."""
    if isinstance(order, (list, tuple)) and sorted(order) == sorted(names):
        return [str(n) for n in order]
    return sorted(names)


def _read_entry(meta_path: Path, *, verify: bool) -> tuple[dict[str, Any] | None, str | None]:
    """An entry's metadata and ``None``, or what is wrong with it (naming the file).

    The tensors file is checked by size (one ``stat``; a truncated or replaced file shows), and
    with ``verify`` by SHA-256 too (reads it: for ``repair``).
    """
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"{meta_path} is not valid JSON ({exc})"
    if not isinstance(meta, dict) or not isinstance(meta.get("image_id"), str) or "key" not in meta:
        return None, f"{meta_path} is not the metadata of a capture store entry (no image_id or key)"
    if meta["key"] != meta_path.stem:
        return meta, f"{meta_path} names the tensors file {meta['key']}.safetensors, not its own"
    tensors = meta_path.parent / tensors_file_name(meta)
    if not re.fullmatch(rf"{re.escape(meta['key'])}(\.[0-9a-f]{{12}})?\.safetensors", tensors.name):
        return meta, f"{meta_path} names the tensors file {tensors.name}, not one of its own"
    if not tensors.is_file():
        return meta, f"{tensors} is missing"
    expected = meta.get("file") or {}
    size = tensors.stat().st_size
    if "bytes" in expected and size != expected["bytes"]:
        return meta, f"{tensors} has {size} bytes, {expected['bytes']} were written"
    if verify and "sha256" in expected:
        from cfviz.models.fingerprint import sha256_file

        if sha256_file(tensors) != expected["sha256"]:
            return meta, f"{tensors} does not have the SHA-256 it was written with"
    return meta, None


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}`` so that a difference is named by its full path."""
    if isinstance(obj, Mapping) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _short(value: Any, limit: int = 80) -> str:
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40,}", value):  # a digest: its head tells them apart
        return f'"{value[:12]}..."'
    text = "(absent)" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ABSENT = object()


def config_differences(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """The settings that differ, one ``"path: old -> new"`` line each (only those).

    >>> config_differences({"batch_size": 1, "extraction": {"timesteps": [100], "state": "damage"}},
    ...                    {"batch_size": 3, "extraction": {"timesteps": [100], "state": "damage"}})
    ['batch_size: 1 -> 3']
    """
    old, new = _flatten(dict(stored)), _flatten(dict(given))
    return [f"{k}: {_short(old.get(k, _ABSENT))} -> {_short(new.get(k, _ABSENT))}"
            for k in sorted(set(old) | set(new)) if old.get(k, _ABSENT) != new.get(k, _ABSENT)]


def _told(hints: Hints | None, stored: Mapping[str, Any], diffs: Sequence[str]) -> str:
    """How to run with the stored values of the differing settings that ``hints`` know ("" if none)."""
    flat = _flatten(dict(stored))
    told = [t for p, hint in (hints or {}).items() if any(d.startswith(f"{p}: ") for d in diffs)
            if (t := hint(flat.get(p)))]
    return "; ".join(told)


def _differences(stored: Mapping[str, Any], given: Mapping[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """:func:`config_differences` leaving out the paths in ``ignore`` (and everything under them)."""
    return [d for d in config_differences(stored, given)
            if not any(d.startswith((f"{p}: ", f"{p}.")) for p in ignore)]


def _shown(diffs: Sequence[str]) -> str:
    return "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")


def _compare(stored: Mapping[str, Any], given: Mapping[str, Any], header: Path, what: str = "configuration", *,
             ignore: Sequence[str] = (), hints: Hints | None = None) -> None:
    diffs = _differences(stored, given, ignore)
    if diffs:
        shown = _shown(diffs)
        # identity keys that stores of cfviz <= round 1 lack: no value to "run with" exists
        older = any(d.startswith(("batch_size: (absent) ->", "models.device_type: (absent) ->")) for d in diffs)
        fix = ("use another store folder (--store, or another --out): this one was written by an older "
               "cfviz that did not record these settings" if older else
               "use another store folder (--store, or another --out) for these settings, or run with the "
               "stored values")
        told = _told(hints, stored, diffs)
        if told and not older:
            fix = f"to add entries to this store, {told}; or " + fix
        raise StoreMismatchError(f"the capture store {header.parent} was written with another {what} ({shown}); "
                                 f"entries are never mixed: {fix}")
