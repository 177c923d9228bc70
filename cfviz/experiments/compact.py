"""The compact store form: test images keep M_diff_V's distance maps instead of their UNet features.

UNet features dominate a store entry (``C x h x w x 2`` bytes per block and timestep: 2.6 MB for
``up_blocks.1`` at 512 px, 10.5 MB for three blocks), yet scoring uses them for one thing only:
M_diff_V, the nearest-neighbour distance of a test image's features to the k-shot references'
(:func:`cfviz.experiments.scoring.diffusion_visual_maps`). With ``RunSpec.store_form="compact"``
(``--store-form compact``) the runner, once every entry of the run is stored (after the
extraction barrier, on the process that scores), compacts each category:

1. it computes M_diff_V of the category's test images with the very function scoring calls, for
   every reference draw of the run (each ``shots >= 1`` and seed) and every (query timestep,
   block; reference timestep, block) pair of :func:`visual_pairs`: the run's own pair, the
   timestep matching grid (every pair of captured timesteps at the visual block) and the block
   matching grid (every pair of stored blocks at the visual timestep), i.e. what
   :func:`cfviz.analysis.ablations.matching_table` reads by default;
2. it writes them, float32 as computed, to a journal file (``STORE/compact/<category>.safetensors``);
3. it rewrites each test entry without ``feat/*`` and with its maps (``mdv/<tq>/<bq>/<tr>/<br>/<draw>``),
   then the references of the draws without ``feat/*`` (their features only ever feed these maps),
   then deletes the journal.

Scoring then reads the stored maps (:func:`stored_visual_maps`): the numbers are those of the
full store, bit for bit (the same function on the same inputs, stored losslessly). What is lost
is what was not asked for: another seed, shots value or (timestep, block) pair needs the test
images' features, so it fails with one :class:`CompactStoreError` naming the setting and the flag
that would have kept it. Attention maps, CLIP outputs and metadata are kept whole (M_diff_L, the
CLIP branches, WinCLIP, the figures and the explorer's attention views work as before).

Every step can be cut and resumed: an entry is rewritten atomically
(:meth:`~cfviz.capture.store.CaptureStore.rewrite`), the journal holds every map until all test
entries carry theirs, and a finished category is skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cfviz.capture.store import CaptureStore, entry_key
from cfviz.errors import ConfigError
from cfviz.experiments.config import ExtractionConfig, ScoringConfig

#: Tensor group of the stored M_diff_V maps in a compacted test entry.
MAP_GROUP = "mdv"
#: Folder (inside the store) of the per-category journals of a compaction in progress.
JOURNAL_DIR = "compact"
#: A pair: (query timestep, query block, reference timestep, reference block).
Pair = tuple[int, str, int, str]


class CompactStoreError(ConfigError):
    """A compact store lacks what a setting needs (its features were replaced by distance maps)."""


def _t(t: Any) -> int:
    return int(round(float(t)))


def resolved_pair(scoring: ScoringConfig, extraction: ExtractionConfig) -> Pair:
    """The (query t, block, reference t, block) that M_diff_V uses under ``scoring`` (defaults filled in).

    >>> resolved_pair(ScoringConfig(), ExtractionConfig())
    (261, 'up_blocks.1', 261, 'up_blocks.1')
    """
    from cfviz.experiments.scoring import _default_visual_timestep

    t_q = scoring.visual_timestep if scoring.visual_timestep is not None else \
        _default_visual_timestep(extraction.timesteps)  # the middle by value, as scoring takes it
    t_r = scoring.reference_timestep if scoring.reference_timestep is not None else t_q
    return _t(t_q), scoring.visual_block, _t(t_r), scoring.reference_block or scoring.visual_block


def visual_pairs(extraction: ExtractionConfig, scoring: ScoringConfig) -> list[Pair]:
    """The pairs a compact store keeps: the run's own, then the timestep and block matching grids.

    Only pairs of stored blocks (``extraction.features``) are listed.

    >>> visual_pairs(ExtractionConfig(timesteps=(100, 400)), ScoringConfig())  # doctest: +NORMALIZE_WHITESPACE
    [(400, 'up_blocks.1', 400, 'up_blocks.1'), (100, 'up_blocks.1', 100, 'up_blocks.1'),
     (100, 'up_blocks.1', 400, 'up_blocks.1'), (400, 'up_blocks.1', 100, 'up_blocks.1')]
    """
    t_q, b_q, t_r, b_r = resolved_pair(scoring, extraction)
    ts, blocks = [_t(t) for t in extraction.timesteps], list(extraction.features)
    pairs = [(t_q, b_q, t_r, b_r)]
    pairs += [(q, b_q, r, b_r) for q in ts for r in ts]  # matching_table(kind="timestep")
    pairs += [(t_q, q, t_r, r) for q in blocks for r in blocks]  # matching_table(kind="block")
    return [p for p in dict.fromkeys(pairs) if p[1] in blocks and p[3] in blocks]


def draw_key(ref_ids: Sequence[str]) -> str:
    """A short stable name for a reference draw (the maps depend on which images, in which order)."""
    return hashlib.sha1("\n".join(ref_ids).encode("utf-8")).hexdigest()[:12]


def map_name(pair: Pair, ref_ids: Sequence[str]) -> str:
    """The tensor name of one stored M_diff_V map.

    >>> map_name((100, "up_blocks.1", 400, "up_blocks.2"), ["a/train/good/000"])
    'mdv/100/up_blocks.1/400/up_blocks.2/49c6df01704e'
    """
    t_q, b_q, t_r, b_r = pair
    return f"{MAP_GROUP}/{_t(t_q)}/{b_q}/{_t(t_r)}/{b_r}/{draw_key(ref_ids)}"


def is_compacted(meta: dict[str, Any]) -> bool:
    """True for an entry rewritten by compaction (its ``feat/*`` are gone)."""
    return meta.get("form") == "compact"


def reference_draws(dataset: Any, category: str, shots: Sequence[int], seeds: Sequence[int]) -> dict[str, dict]:
    """``draw key -> {"references": ids, "shots": k, "seeds": [...]}`` for every k >= 1 and seed of a run."""
    from cfviz.data.samples import sample_references

    draws: dict[str, dict[str, Any]] = {}
    for k in sorted({int(k) for k in shots if k}):
        for seed in seeds:
            refs = [r.image_id for r in sample_references(dataset, category, k, seed)]
            d = draws.setdefault(draw_key(refs), {"references": refs, "shots": k, "seeds": []})
            d["seeds"].append(int(seed))
    return draws


def _flags_hint() -> str:
    return ("extract into another store with {store_form} full (it keeps the features), or with {store_form} "
            "compact and {shots}/{seeds} listing every setting you will score (compaction keeps the matching "
            "grid of the stored {extraction.timesteps} and {extraction.features})")


_MENTIONS = ("shots", "seeds", "extraction.timesteps", "extraction.features")


def _describe(pair: Pair) -> str:
    return f"query timestep {pair[0]} of {pair[1]}, reference timestep {pair[2]} of {pair[3]}"


def _kept(meta: dict[str, Any]) -> str:
    kept = meta.get("visual_maps") or {}
    pairs = [tuple(p) for p in kept.get("pairs", [])]
    draws = sorted((d["shots"], s) for d in (kept.get("draws") or {}).values() for s in d["seeds"])
    shown = "; ".join(_describe(p) for p in pairs[:4]) + (f"; and {len(pairs) - 4} more" if len(pairs) > 4 else "")
    return f"pairs: {shown or 'none'}; (shots, seed): {draws or 'none'}"


def stored_visual_maps(store: CaptureStore, ids: Sequence[str], ref_ids: Sequence[str], pair: Pair) -> np.ndarray | None:
    """M_diff_V ``(N, h, w)`` read from a compact store, or ``None`` when the test entries hold features.

    Raises :class:`CompactStoreError` naming the pair and the reference draw when the store was
    compacted without them, or when a compaction was cut short (some entries compacted, some not).
    """
    entries = [store[i] for i in ids]
    compacted = [e for e in entries if is_compacted(e.meta)]
    if not compacted:
        return None
    name = map_name(pair, ref_ids)
    if len(compacted) != len(entries):
        raise CompactStoreError(f"the compaction of the capture store {store.path} was cut short ({len(compacted)} "
                                f"of {len(entries)} images of this set compacted); rerun the same evaluation with "
                                "{store_form} compact to finish it", "store_form")
    if not all(name in e.meta.get("tensors", {}) for e in entries):
        raise CompactStoreError(
            f"the compact capture store {store.path} has no M_diff_V for {_describe(pair)} with the "
            f"{len(ref_ids)}-shot references {list(ref_ids)[:4]}{' ...' if len(ref_ids) > 4 else ''}: compaction "
            f"replaced the test images' features by the maps it was asked for ({_kept(compacted[0].meta)}); "
            + _flags_hint(), "store_form", mentions=_MENTIONS)
    return np.stack([e[name].numpy() for e in entries])


def _journal(store: CaptureStore, category: str) -> Path:
    return store.path / JOURNAL_DIR / f"{entry_key(category)}.safetensors"


def _read_journal(path: Path, ids: Sequence[str], names: set[str]) -> dict[str, Any] | None:
    """The maps of a finished journal for exactly these test ids and (at least) these names, else None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            if json.loads((fh.metadata() or {}).get("ids", "null")) != list(ids) or not names <= set(fh.keys()):
                return None
            return {n: fh.get_tensor(n) for n in names}
    except Exception:  # a damaged journal is recomputed when the features are still there
        return None


def _category_plan(dataset: Any, category: str, shots: Sequence[int], seeds: Sequence[int],
                   extraction: ExtractionConfig, scoring: ScoringConfig
                   ) -> tuple[list[str], dict[str, dict], list[Pair], dict[str, tuple[Pair, list[str]]]]:
    """A category's test ids, reference draws, kept pairs and ``map name -> (pair, references)`` to keep."""
    ids = [r.image_id for r in dataset.records if r.category == category and r.split == "test"]
    draws = reference_draws(dataset, category, shots, seeds)
    pairs = visual_pairs(extraction, scoring) if draws else []
    wanted = {map_name(p, d["references"]): (p, d["references"]) for p in pairs for d in draws.values()}
    return ids, draws, pairs, wanted


def compact_category(store: CaptureStore, dataset: Any, category: str, *, shots: Sequence[int],
                     seeds: Sequence[int], extraction: ExtractionConfig, scoring: ScoringConfig) -> int:
    """Compact one category (see the module docstring); returns how many entries were rewritten."""
    import torch

    from cfviz.experiments.scoring import BranchCache, diffusion_visual_maps
    from cfviz.utils.io import save_safetensors

    ids, draws, pairs, wanted = _category_plan(dataset, category, shots, seeds, extraction, scoring)
    record = {"pairs": [list(p) for p in pairs], "draws": draws}
    refs = sorted({r for d in draws.values() for r in d["references"]})
    entries = {i: store[i] for i in ids}

    def done(meta: dict[str, Any]) -> bool:
        return is_compacted(meta) and set(wanted) <= set(meta.get("tensors", {}))

    todo = [i for i in ids if not done(entries[i].meta)]
    rewritten = 0
    if todo:
        journal = _journal(store, category)
        maps = _read_journal(journal, ids, set(wanted)) if wanted else {}  # zero-shot only: no maps to keep
        if maps is None:
            _check_features_kept(store, category, ids, entries, pairs, wanted, draws)
            computed: dict[str, Any] = {}
            for t_q, b_q in dict.fromkeys((p[0], p[1]) for p in pairs):
                cache = BranchCache()  # the query features of one (timestep, block) at a time, read once
                for name, (pair, ref_ids) in wanted.items():
                    if pair[:2] != (t_q, b_q):
                        continue
                    sc = replace(scoring, visual_timestep=pair[0], visual_block=pair[1], reference_timestep=pair[2],
                                 reference_block=pair[3])
                    out = diffusion_visual_maps(store, ids, ref_ids, sc, extraction, cache)
                    if out.dtype != np.float32:  # visual_map computes in float32; kept as it is: no loss
                        raise TypeError(f"M_diff_V came out as {out.dtype}, not float32")
                    computed[name] = torch.from_numpy(np.ascontiguousarray(out))
            journal.parent.mkdir(parents=True, exist_ok=True)
            save_safetensors(journal, computed, metadata={"ids": json.dumps(list(ids)), "category": category})
            maps = computed
        for row, image_id in enumerate(ids):
            if image_id not in todo:
                continue
            meta = entries[image_id].meta
            old = meta.get("visual_maps") or {"pairs": [], "draws": {}}
            merged = {"pairs": [list(p) for p in dict.fromkeys(tuple(p) for p in old["pairs"] + record["pairs"])],
                      "draws": {**old["draws"], **draws}}
            arrays = {n: maps[n][row].clone() for n in wanted}
            store.rewrite(image_id, drop=["feat/"], arrays=arrays, meta={"form": "compact", "visual_maps": merged})
            rewritten += 1
    for ref in refs:  # their features only ever fed the maps just stored
        if ref in store and any(n.startswith("feat/") for n in store[ref].names):
            store.rewrite(ref, drop=["feat/"], meta={"form": "compact"})
            rewritten += 1
    store.remove_orphans([*ids, *refs])
    journal = _journal(store, category)
    if journal.exists():  # nothing is written to a compacted store: it may be on a read-only mount
        journal.unlink()
    if journal.parent.is_dir() and not any(journal.parent.iterdir()):
        journal.parent.rmdir()
    return rewritten


def _check_features_kept(store: CaptureStore, category: str, ids: Sequence[str], entries: dict[str, Any],
                         pairs: Sequence[Pair], wanted: dict[str, Any], draws: dict[str, dict]) -> None:
    """Raise :class:`CompactStoreError` when test images that no longer hold features would need them."""
    blocks = sorted({b for p in pairs for b in (p[1], p[3])})
    lacking = [i for i in ids if i in entries
               and any(f"feat/{b}" not in entries[i].meta.get("tensors", {}) for b in blocks)]
    if not lacking:
        return
    have = entries[lacking[0]].meta
    missing = sorted({(wanted[n][0], draws[n.rsplit('/', 1)[1]]["shots"]) for n in wanted
                      if n not in have.get("tensors", {})})
    raise CompactStoreError(
        f"the compact capture store {store.path} cannot give category {category!r} what this run asks "
        f"for: {len(lacking)} test images no longer hold their features (e.g. {lacking[0]}: "
        f"{_kept(have)}), and M_diff_V for {len(missing) or 'some'} (pair, shots) settings "
        + (f"such as {_describe(missing[0][0])} at {missing[0][1]} shots " if missing else "")
        + "was not kept; " + _flags_hint(),
        "store_form", mentions=_MENTIONS)


def check_before_extraction(store: CaptureStore, dataset: Any, categories: Sequence[str], spec: Any) -> None:
    """Refuse, before any model runs, a run whose k-shot settings a compacted store can no longer serve.

    A compacted test image keeps only the M_diff_V maps of the draws it was compacted for; a new
    seed or shots value would otherwise extract its references first and fail only afterwards.
    """
    for category in categories:
        tests = [r.image_id for r in dataset.records if r.category == category and r.split == "test"]
        entries = {i: store[i] for i in tests if i in store}
        if not any(is_compacted(e.meta) for e in entries.values()):
            continue  # nothing compacted here yet: no draws to sample
        ids, draws, pairs, wanted = _category_plan(dataset, category, spec.shots, spec.seeds, spec.extraction,
                                                   spec.scoring)
        needs_maps = any(not (is_compacted(e.meta) and set(wanted) <= set(e.meta.get("tensors", {})))
                         for e in entries.values())
        if not (wanted and needs_maps) or _read_journal(_journal(store, category), ids, set(wanted)) is not None:
            continue  # nothing left to compute, or a cut compaction whose journal holds the maps
        _check_features_kept(store, category, ids, entries, pairs, wanted, draws)


def compact_store(store: CaptureStore, dataset: Any, categories: Sequence[str], spec: Any, *,
                  progress: bool = False) -> int:
    """Compact every category of a run (``spec`` a :class:`~cfviz.experiments.config.RunSpec`); entries rewritten."""
    from cfviz.utils.io import remove_stale_temp_files
    from cfviz.utils.progress import progress_bar

    if (store.path / JOURNAL_DIR).is_dir():
        remove_stale_temp_files(store.path / JOURNAL_DIR)
    bar = progress_bar(total=len(categories), desc="compacting", unit="category", disable=not progress)
    n = 0
    try:
        for category in categories:
            n += compact_category(store, dataset, category, shots=spec.shots, seeds=spec.seeds,
                                  extraction=spec.extraction, scoring=spec.scoring)
            bar.update(1)
    finally:
        bar.close()
    return n
