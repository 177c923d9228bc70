"""The embedded default data set: real texture photographs with synthetic defects.

scikit-image ships three 512x512 grayscale texture photographs offline
(``skimage.data.brick()``, ``grass()``, ``gravel()``). :func:`generate_textures` turns them into
a small data set in the MVTec-AD layout, so that the whole pipeline runs without downloads::

    ROOT/manifest.json
    ROOT/<brick|grass|gravel>/train/good/000.png
    ROOT/<category>/test/good/000.png
    ROOT/<category>/test/<defect>/000.png
    ROOT/<category>/ground_truth/<defect>/000_mask.png      (0 and 255)

How an image is made: a random crop (``crop_size`` px, random offset, random flips and a random
multiple of 90 degrees) of the category's photograph, resized to ``image_size`` and coloured
with a per-category tint (a different gamma per channel, so hue varies with brightness and the
images are real colour images). Every image has its own generator seeded with
``(seed, category, split, defect kind, index)``, so changing one count leaves the other images
unchanged.

Defect kinds (:data:`DEFECT_KINDS`), each drawn with a random size, position and shape:

* ``scratch``: a thin curved line, dark on bright texture and bright on dark texture;
* ``hole``: an irregular dark blob;
* ``stain``: an irregular translucent blob of a colour foreign to the category;
* ``foreign``: cut-and-paste of an irregular or rectangular patch of ANOTHER texture
  (with that texture's tint).

The mask is exactly the set of pixels the defect painted; :func:`apply_defect` redraws (with
the same generator) until the mask covers at least ``0.05 %`` of the image and the mean
absolute change inside it is at least 12 grey levels, so no defect is invisible.

Same seed and parameters give byte-identical files (for the same numpy, Pillow, zlib and
scikit-image versions, which the manifest records). All writes are atomic; the manifest is
written last, so a missing manifest means an incomplete set.

Where the default set lives: :func:`default_data_dir` (``$CFVIZ_DATA_DIR``, else the ``data/``
folder of the cfviz source checkout when cfviz is imported from one, else ``./data``) plus
``textures``.

Results of the offline tiny random-weight models on this set show that the pipeline works,
not how well a method detects anomalies.

Example
-------
>>> import tempfile
>>> root = generate_textures(tempfile.mkdtemp(), seed=0, image_size=64, n_train=2,
...                          n_test_good=1, n_per_defect=1, categories=("brick",))
>>> ds = TexturesDataset(root, split="all", image_size=64, n_train=2, n_test_good=1,
...                      n_per_defect=1, categories_generated=("brick",))
>>> len(ds), sorted({r.defect_type for r in ds.records})
(7, ['foreign', 'good', 'hole', 'scratch', 'stain'])
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cfviz._version import __version__
from cfviz.data.mvtec import FolderDataset
from cfviz.data.samples import check_limit_per_type
from cfviz.errors import DatasetError

TEXTURE_CATEGORIES: tuple[str, ...] = ("brick", "grass", "gravel")
DEFECT_KINDS: tuple[str, ...] = ("scratch", "hole", "stain", "foreign")
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
SOURCE_SIZE = 512

# per-category (tint, gamma) per channel: a multiplicative colour and a brightness-dependent hue
_COLOUR = {
    "brick": ((1.00, 0.62, 0.48), (0.90, 1.05, 1.20)),
    "grass": ((0.62, 0.95, 0.40), (1.15, 0.90, 1.25)),
    "gravel": ((0.92, 0.86, 0.74), (1.00, 1.05, 1.15)),
}
_STAIN_COLOURS = ((85, 52, 22), (35, 55, 130), (120, 30, 95), (20, 90, 85))
_MIN_MASK_FRACTION = 0.0005
_MIN_MEAN_CHANGE = 12.0


# -- where the data lives ---------------------------------------------------------------------
def default_data_dir() -> Path:
    """The folder for generated data sets.

    1. ``$CFVIZ_DATA_DIR`` when set;
    2. the ``data/`` folder of the cfviz source checkout, when cfviz is imported from one (a
       ``pyproject.toml`` naming cfviz next to the ``cfviz`` package), whatever the current
       directory (notebooks run from ``notebooks/`` find the same folder);
    3. ``./data`` in the current directory otherwise (e.g. cfviz installed from a wheel).

    >>> saved = os.environ.get("CFVIZ_DATA_DIR")
    >>> os.environ["CFVIZ_DATA_DIR"] = "/tmp/cfviz-data"
    >>> default_data_dir().as_posix()
    '/tmp/cfviz-data'
    >>> _ = os.environ.pop("CFVIZ_DATA_DIR") if saved is None else os.environ.update(CFVIZ_DATA_DIR=saved)
    """
    env = os.environ.get("CFVIZ_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import cfviz

    checkout = Path(cfviz.__file__).resolve().parent.parent
    pyproject = checkout / "pyproject.toml"
    try:
        if pyproject.is_file() and 'name = "cfviz"' in pyproject.read_text(encoding="utf-8"):
            return checkout / "data"
    except OSError:
        pass
    return Path.cwd() / "data"


def default_textures_dir() -> Path:
    """``default_data_dir() / "textures"``."""
    return default_data_dir() / "textures"


# -- image making -----------------------------------------------------------------------------
def load_sources() -> dict[str, np.ndarray]:
    """The three scikit-image texture photographs as ``uint8 (512, 512)`` arrays."""
    import skimage.data

    out = {name: np.asarray(getattr(skimage.data, name)(), dtype=np.uint8) for name in TEXTURE_CATEGORIES}
    for name, arr in out.items():
        if arr.shape != (SOURCE_SIZE, SOURCE_SIZE):
            raise DatasetError(f"skimage.data.{name}() has shape {arr.shape}, expected (512, 512); this "
                               "scikit-image version ships different sample images. Fix: install scikit-image 0.22-0.26.")
    return out


def texture_crop(source: np.ndarray, rng: np.random.Generator, *, image_size: int, crop_size: int) -> np.ndarray:
    """A random crop of ``source`` (offset, flips, rot90), resized to ``image_size`` (grayscale)."""
    from PIL import Image

    h, w = source.shape
    y = int(rng.integers(0, h - crop_size + 1))
    x = int(rng.integers(0, w - crop_size + 1))
    crop = source[y:y + crop_size, x:x + crop_size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1, :]
    crop = np.ascontiguousarray(np.rot90(crop, k=int(rng.integers(0, 4))))
    if crop.shape == (image_size, image_size):
        return crop
    return np.asarray(Image.fromarray(crop).resize((image_size,) * 2, Image.Resampling.BILINEAR), dtype=np.uint8)


def colourise(gray: np.ndarray, category: str) -> np.ndarray:
    """Grayscale ``uint8 (H, W)`` to the category's RGB colours, ``uint8 (H, W, 3)``."""
    tint, gamma = _COLOUR[category]
    g = gray.astype(np.float64) / 255.0
    rgb = np.stack([np.power(g, gm) * t for t, gm in zip(tint, gamma)], axis=2)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _draw(size: int, paint: Any) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (size, size), 0)
    paint(ImageDraw.Draw(canvas))
    return np.asarray(canvas) > 0


def _blob(rng: np.random.Generator, size: int, radius: float, jitter: float, n_vertices: int) -> np.ndarray:
    """An irregular filled polygon around a random centre that keeps it inside the image."""
    margin = min(radius * (1 + jitter), size / 2 - 1)
    cy, cx = rng.uniform(margin, size - margin, size=2)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
    radii = radius * (1 + jitter * rng.uniform(-1, 1, n_vertices))
    pts = [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a, r in zip(angles, radii)]
    return _draw(size, lambda d: d.polygon(pts, fill=255))


def _scratch(out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = out.shape[0]
    length = rng.uniform(0.25, 0.7) * s
    width = max(1, int(round(rng.uniform(0.008, 0.022) * s)))
    n = 7
    y, x = rng.uniform(0.2 * s, 0.8 * s, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    pts = [(float(x), float(y))]
    for _ in range(n - 1):
        angle += rng.uniform(-0.3, 0.3)
        x += np.cos(angle) * length / (n - 1)
        y += np.sin(angle) * length / (n - 1)
        pts.append((float(x), float(y)))
    mask = _draw(s, lambda d: d.line(pts, fill=255, width=width, joint="curve"))
    if mask.any():
        dark = out[mask].mean() > 110  # contrast with what is under the scratch
        colour = rng.uniform(10, 35) if dark else rng.uniform(215, 245)
        out[mask] = 0.8 * colour + 0.2 * out[mask]
    return mask


def _hole(out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mask = _blob(rng, out.shape[0], rng.uniform(0.03, 0.12) * out.shape[0], 0.3, 14)
    out[mask] = 0.12 * out[mask] + 8.0
    return mask


def _stain(out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mask = _blob(rng, out.shape[0], rng.uniform(0.06, 0.2) * out.shape[0], 0.45, 18)
    colour = np.asarray(_STAIN_COLOURS[int(rng.integers(0, len(_STAIN_COLOURS)))], dtype=np.float64)
    alpha = rng.uniform(0.55, 0.8)
    out[mask] = (1 - alpha) * out[mask] + alpha * colour
    return mask


def _foreign(out: np.ndarray, rng: np.random.Generator, foreign: np.ndarray) -> np.ndarray:
    s = out.shape[0]
    if rng.random() < 0.5:
        side = rng.uniform(0.1, 0.3) * s
        y0, x0 = rng.uniform(0, s - side, size=2)
        box = (float(x0), float(y0), float(x0 + side), float(y0 + side))
        mask = _draw(s, lambda d: d.rectangle(box, fill=255))
    else:
        mask = _blob(rng, s, rng.uniform(0.06, 0.16) * s, 0.35, 12)
    out[mask] = foreign.astype(np.float64)[mask]
    return mask


def apply_defect(image: np.ndarray, kind: str, rng: np.random.Generator, *,
                 foreign: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of ``kind`` on a square ``uint8 (S, S, 3)`` image.

    Parameters
    ----------
    image : the clean image (not modified).
    kind : one of :data:`DEFECT_KINDS`.
    rng : the generator that draws size, position and shape.
    foreign : for ``"foreign"``, a same-sized image of another texture to cut the patch from.

    Returns
    -------
    (defective image ``uint8 (S, S, 3)``, mask ``uint8 (S, S)`` in {0, 1}). The mask is non-empty
    and the mean absolute change inside it is at least 12 grey levels.

    >>> rng = np.random.default_rng(0)
    >>> clean = np.full((64, 64, 3), 128, np.uint8)
    >>> bad, mask = apply_defect(clean, "hole", rng)
    >>> bool(mask.any()), bool((bad[mask > 0] != clean[mask > 0]).all())
    (True, True)
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"kind must be one of {DEFECT_KINDS}, got {kind!r}")
    if image.ndim != 3 or image.shape[0] != image.shape[1] or image.dtype != np.uint8:
        raise ValueError(f"image must be a square uint8 (S, S, 3) array, got {image.dtype} {image.shape}")
    if kind == "foreign" and (foreign is None or foreign.shape != image.shape):
        raise ValueError("kind 'foreign' needs foreign= an image of another texture with the same shape")
    s = image.shape[0]
    paint = {"scratch": _scratch, "hole": _hole, "stain": _stain,
             "foreign": lambda out, rng: _foreign(out, rng, foreign)}[kind]  # type: ignore[arg-type]
    for _ in range(50):
        out = image.astype(np.float64)  # each painter paints its defect on this copy
        mask = paint(out, rng)
        result = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        if mask.sum() >= max(4, _MIN_MASK_FRACTION * s * s):
            change = np.abs(result.astype(np.int16) - image.astype(np.int16))[mask].mean()
            if change >= _MIN_MEAN_CHANGE:
                return result, mask.astype(np.uint8)
    raise RuntimeError(f"could not draw a visible {kind!r} defect in 50 tries (image too small or too uniform)")


# -- writing ----------------------------------------------------------------------------------
def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)  # speed over size: it is scratch data
    return buf.getvalue()


def _write_if_changed(path: Path, data: bytes) -> None:
    """Atomic write; an identical existing file is left alone (no needless rewrite)."""
    from cfviz.utils.io import atomic_write_bytes

    try:
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_bytes(path, data)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
    return int(value)


def texture_parameters(*, image_size: int = 256, n_train: int = 10, n_test_good: int = 6, n_per_defect: int = 3,
                       categories: Sequence[str] = TEXTURE_CATEGORIES, defect_kinds: Sequence[str] = DEFECT_KINDS,
                       crop_size: int = 320) -> dict[str, Any]:
    """Validated generator parameters as the JSON-friendly dict stored in the manifest."""
    def names(arg: str, value: str | Sequence[str], allowed: tuple[str, ...]) -> list[str]:
        """Distinct names from ``allowed``, in its order."""
        given = [value] if isinstance(value, str) else list(value)
        if any(v not in allowed for v in given) or not given or len(set(given)) != len(given):
            raise ValueError(f"{arg} must be distinct names from {allowed}, got {given}")
        return sorted(given, key=allowed.index)

    cats, kinds = names("categories", categories, TEXTURE_CATEGORIES), names("defect_kinds", defect_kinds, DEFECT_KINDS)
    return {
        "image_size": _check_int("image_size", image_size, 32, 2048),
        "n_train": _check_int("n_train", n_train, 0),
        "n_test_good": _check_int("n_test_good", n_test_good, 0),
        "n_per_defect": _check_int("n_per_defect", n_per_defect, 0),
        "categories": cats, "defect_kinds": kinds,
        "crop_size": _check_int("crop_size", crop_size, 32, SOURCE_SIZE),
    }


def _image_rng(seed: int, category: str, split: str, kind: str, index: int) -> np.random.Generator:
    key = [seed, TEXTURE_CATEGORIES.index(category), ("train", "test").index(split),
           (("good",) + DEFECT_KINDS).index(kind), index]
    return np.random.default_rng(key)


def _render(params: dict[str, Any], seed: int, sources: dict[str, np.ndarray]) -> Iterable[tuple[str, np.ndarray]]:
    """Yield ``(relative path, uint8 array)`` for every file of the data set, in a fixed order."""
    size, crop = params["image_size"], params["crop_size"]

    def clean(cat: str, rng: np.random.Generator) -> np.ndarray:
        return colourise(texture_crop(sources[cat], rng, image_size=size, crop_size=crop), cat)

    for cat in params["categories"]:
        for split, n in (("train", params["n_train"]), ("test", params["n_test_good"])):
            for i in range(n):
                yield f"{cat}/{split}/good/{i:03d}.png", clean(cat, _image_rng(seed, cat, split, "good", i))
        for kind in params["defect_kinds"]:
            for i in range(params["n_per_defect"]):
                rng = _image_rng(seed, cat, "test", kind, i)
                base = clean(cat, rng)
                other = None
                if kind == "foreign":  # a patch of another texture, in that texture's colours
                    others = [c for c in TEXTURE_CATEGORIES if c != cat]
                    src = others[int(rng.integers(0, len(others)))]
                    other = clean(src, rng)
                image, mask = apply_defect(base, kind, rng, foreign=other)
                yield f"{cat}/test/{kind}/{i:03d}.png", image
                yield f"{cat}/ground_truth/{kind}/{i:03d}_mask.png", mask * np.uint8(255)


def generate_textures(root: str | os.PathLike[str] | None = None, *, seed: int = 0, image_size: int = 256,
                      n_train: int = 10, n_test_good: int = 6, n_per_defect: int = 3,
                      categories: Sequence[str] = TEXTURE_CATEGORIES, defect_kinds: Sequence[str] = DEFECT_KINDS,
                      crop_size: int = 320) -> Path:
    """Write the texture data set to ``root`` (default :func:`default_textures_dir`); return ``root``.

    Parameters
    ----------
    root : destination folder (created). Files listed by a previous manifest in ``root`` that
        the new set does not contain are removed (only those: other files are never touched).
    seed : seeds every random choice; the same seed and parameters give byte-identical files.
    image_size : side of the square images in pixels.
    n_train, n_test_good, n_per_defect : images per category in train/good, test/good and
        each test/<defect> folder.
    categories : subset of :data:`TEXTURE_CATEGORIES`.
    defect_kinds : subset of :data:`DEFECT_KINDS`.
    crop_size : side of the crop taken from the 512 px photograph before resizing.
    """
    from cfviz.utils.env import library_versions
    from cfviz.utils.io import atomic_write_json

    seed = _check_int("seed", seed, 0)
    params = texture_parameters(image_size=image_size, n_train=n_train, n_test_good=n_test_good,
                                n_per_defect=n_per_defect, categories=categories, defect_kinds=defect_kinds,
                                crop_size=crop_size)
    root_path = Path(root).expanduser() if root is not None else default_textures_dir()
    root_path.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(root_path)
    manifest_path = root_path / MANIFEST_NAME
    manifest_path.unlink(missing_ok=True)  # an interrupted regeneration must not look complete

    files: list[str] = []
    counts: dict[str, dict[str, int]] = {c: {} for c in params["categories"]}
    for rel, arr in _render(params, seed, load_sources()):
        _write_if_changed(root_path / rel, _png_bytes(arr))
        files.append(rel)
        cat, split, kind = rel.split("/")[:3]
        if split != "ground_truth":
            counts[cat][f"{split}/{kind}"] = counts[cat].get(f"{split}/{kind}", 0) + 1
    _remove_stale(root_path, old, set(files))

    versions = library_versions(("numpy", "pillow", "scikit-image"))
    manifest = {
        "generator": "cfviz.data.textures.generate_textures", "format_version": FORMAT_VERSION,
        "seed": seed, "parameters": params, "cfviz_version": __version__, "versions": versions,
        "source": "scikit-image sample photographs skimage.data.brick(), grass(), gravel() (512x512 grayscale)",
        "counts": counts, "files": sorted(files),
    }
    atomic_write_json(manifest_path, manifest)
    return root_path


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_stale(root: Path, old: dict[str, Any] | None, keep: set[str]) -> None:
    """Delete files the previous manifest listed and the new set lacks, then their empty folders."""
    if not old or not isinstance(old.get("files"), list):
        return
    resolved_root = root.resolve()
    for rel in old["files"]:
        if not isinstance(rel, str) or rel in keep:
            continue
        path = (root / rel).resolve()
        if resolved_root not in path.parents:  # never follow a manifest outside root
            continue
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != resolved_root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def ensure_textures(root: str | os.PathLike[str] | None = None, seed: int = 0, **params: Any) -> Path:
    """Return the texture data set folder, generating it only when needed.

    It is (re)generated when ``root`` has no manifest, when the manifest's seed, parameters or
    format differ from the ones asked for, or when a file it lists is missing. ``params`` are
    those of :func:`generate_textures`.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> p = ensure_textures(d, seed=3, image_size=48, n_train=1, n_test_good=0, n_per_defect=1,
    ...                     categories=["grass"], defect_kinds=["stain"])
    >>> sorted(json.loads((p / "manifest.json").read_text())["files"])
    ['grass/ground_truth/stain/000_mask.png', 'grass/test/stain/000.png', 'grass/train/good/000.png']
    """
    seed = _check_int("seed", seed, 0)
    wanted = texture_parameters(**params)
    root_path = Path(root).expanduser() if root is not None else default_textures_dir()
    manifest = _read_manifest(root_path)
    if (manifest is not None and manifest.get("format_version") == FORMAT_VERSION and manifest.get("seed") == seed
            and manifest.get("parameters") == wanted
            and all((root_path / rel).is_file() for rel in manifest.get("files", [None]) if isinstance(rel, str))):
        return root_path
    return generate_textures(root_path, seed=seed, **params)


class TexturesDataset(FolderDataset):
    """The embedded texture data set, generated on first use (see the module docstring).

    Parameters
    ----------
    root : folder of the set (default :func:`default_textures_dir`).
    categories : which categories to read (a subset of the generated ones; None for all).
    split : ``"train"``, ``"test"`` (default) or ``"all"``.
    seed : generator seed.
    categories_generated : the ``categories`` argument of :func:`generate_textures`.
    limit_per_type : keep the first N test images of each (category, defect type) in sorted
        image-id order (None keeps all); the files are generated as usual.
    **params : other :func:`generate_textures` parameters (image_size, n_train, ...).

    The folder is regenerated when it was made with another seed or other parameters, so the
    data set always matches the arguments; ``info`` records the seed and the parameters.

    Example
    -------
    >>> ds = TexturesDataset(categories="brick")   # doctest: +SKIP
    >>> ds                                          # doctest: +SKIP
    TexturesDataset(root='.../data/textures', 18 samples, 1 categories, masks=yes)
    ...
    """

    kind = "textures"

    def __init__(self, root: str | os.PathLike[str] | None = None, categories: str | Iterable[str] | None = None,
                 split: str = "test", *, seed: int = 0, categories_generated: Sequence[str] = TEXTURE_CATEGORIES,
                 limit_per_type: int | None = None, name: str | None = None, **params: Any) -> None:
        check_limit_per_type(limit_per_type)  # before generating anything
        path = ensure_textures(root, seed=seed, categories=categories_generated, **params)
        super().__init__(path, categories, split, limit_per_type=limit_per_type, name=name)
        self.info.update({"seed": seed, "cfviz_version": __version__,
                          "generator_parameters": texture_parameters(categories=categories_generated, **params)})
