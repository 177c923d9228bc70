"""The compact store form: test images keep M_diff_V's distance maps instead of their UNet features.

UNet features dominate a store entry (``C x h x w x 2`` bytes per block and timestep: 2.6 MB for
``up_blocks.1`` at 512 px, 10.5 MB for three blocks), yet scoring uses them for one thing only:
M_diff_V, the nearest-neighbour distance of a test image's features to the k-shot references'
(:func:`cfviz.evaluation.scoring.diffusion_visual_maps`). With ``RunSpec.store_form="compact"``
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

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cfviz.capture.store import CaptureStore, entry_key
from cfviz.evaluation.compact_form import (FLAG_MENTIONS, FLAGS_HINT, CompactStoreError, describe_pair, draw_key,
                                            is_compacted, kept_maps, map_name)
from cfviz.evaluation.config import ExtractionConfig, Pair, ScoringConfig, resolved_pair, whole_timestep

#: Folder (inside the store) of the per-category journals of a compaction in progress.
JOURNAL_DIR = "compact"


def visual_pairs(extraction: ExtractionConfig, scoring: ScoringConfig) -> list[Pair]:
    """The pairs a compact store keeps: the run's own, then the timestep and block matching grids.

    Only pairs of stored blocks (``extraction.features``) are listed.

    >>> visual_pairs(ExtractionConfig(timesteps=(100, 400)), ScoringConfig())  # doctest: +NORMALIZE_WHITESPACE
    [(400, 'up_blocks.1', 400, 'up_blocks.1'), (100, 'up_blocks.1', 100, 'up_blocks.1'),
     (100, 'up_blocks.1', 400, 'up_blocks.1'), (400, 'up_blocks.1', 100, 'up_blocks.1')]
    """
    t_q, b_q, t_r, b_r = resolved_pair(scoring, extraction)
    ts, blocks = [whole_timestep(t) for t in extraction.timesteps], list(extraction.features)
    pairs = [(t_q, b_q, t_r, b_r)]
    pairs += [(q, b_q, r, b_r) for q in ts for r in ts]  # matching_table(kind="timestep")
    pairs += [(t_q, q, t_r, r) for q in blocks for r in blocks]  # matching_table(kind="block")
    return [p for p in dict.fromkeys(pairs) if p[1] in blocks and p[3] in blocks]


class CompactPlan(NamedTuple):
    """What compaction keeps of one category: its test ids, reference draws, pairs and map names."""

    ids: list[str]
    draws: dict[str, dict]  #: draw key -> {"references": ids, "shots": k, "seeds": [...]}
    pairs: list[Pair]
    wanted: dict[str, tuple[Pair, list[str]]]  #: map name -> (pair, reference ids)


def group_draws(drawn: Iterable[tuple[int, int, Sequence[str]]]) -> dict[str, dict]:
    """``draw key -> {"references": ids, "shots": k, "seeds": [...]}`` of ``(k, seed, reference ids)`` draws."""
    draws: dict[str, dict[str, Any]] = {}
    for k, seed, refs in drawn:
        d = draws.setdefault(draw_key(refs), {"references": list(refs), "shots": k, "seeds": []})
        d["seeds"].append(int(seed))
    return draws


def reference_draws(dataset: Any, category: str, shots: Sequence[int], seeds: Sequence[int]) -> dict[str, dict]:
    """:func:`group_draws` of every k >= 1 and seed, drawn here (a run's plan draws them once)."""
    from cfviz.data.samples import sample_references

    return group_draws((k, s, [r.image_id for r in sample_references(dataset, category, k, s)])
                       for k in sorted({int(k) for k in shots if k}) for s in seeds)


def compact_plan(ids: Sequence[str], draws: dict[str, dict], extraction: ExtractionConfig,
                 scoring: ScoringConfig) -> CompactPlan:
    """One category's :class:`CompactPlan`: every pair of :func:`visual_pairs` for every draw."""
    pairs = visual_pairs(extraction, scoring) if draws else []
    wanted = {map_name(p, d["references"]): (p, d["references"]) for p in pairs for d in draws.values()}
    return CompactPlan(list(ids), draws, pairs, wanted)


def holds_maps(meta: dict[str, Any], wanted: Iterable[str]) -> bool:
    """Whether a test entry is compacted and holds every map of ``wanted`` (nothing left to compute for it)."""
    return is_compacted(meta) and set(wanted) <= set(meta.get("tensors", {}))


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


def compact_category(store: CaptureStore, dataset: Any, category: str, *, shots: Sequence[int] = (),
                     seeds: Sequence[int] = (), extraction: ExtractionConfig, scoring: ScoringConfig,
                     plan: CompactPlan | None = None) -> int:
    """Compact one category (see the module docstring); returns how many entries were rewritten.

    ``plan``: the category's :class:`CompactPlan` from a run's plan; without it, the test images
    of ``dataset`` and the draws of ``shots`` and ``seeds``.
    """
    import torch

    from cfviz.evaluation.scoring import BranchCache, diffusion_visual_maps
    from cfviz.utils.io import save_safetensors

    if plan is None:
        tests = [r.image_id for r in dataset.records if r.category == category and r.split == "test"]
        plan = compact_plan(tests, reference_draws(dataset, category, shots, seeds), extraction, scoring)
    ids, draws, pairs, wanted = plan
    record = {"pairs": [list(p) for p in pairs], "draws": draws}
    refs = sorted({r for d in draws.values() for r in d["references"]})
    entries = {i: store[i] for i in ids}

    todo = [i for i in ids if not holds_maps(entries[i].meta, wanted)]
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
        f"{kept_maps(have)}), and M_diff_V for {len(missing) or 'some'} (pair, shots) settings "
        + (f"such as {describe_pair(missing[0][0])} at {missing[0][1]} shots " if missing else "")
        + "was not kept; " + FLAGS_HINT,
        "store_form", mentions=FLAG_MENTIONS)


def check_before_extraction(store: CaptureStore, plan: Any) -> None:
    """Refuse, before any model runs, a run whose k-shot settings a compacted store can no longer serve.

    A compacted test image keeps only the M_diff_V maps of the draws it was compacted for; a new
    seed or shots value would otherwise extract its references first and fail only afterwards.
    ``plan``: the run's :class:`~cfviz.evaluation.plan.RunPlan` (its ``compact`` plans).
    """
    for category, (ids, draws, pairs, wanted) in plan.compact.items():
        entries = {i: store[i] for i in ids if i in store}
        if not any(is_compacted(e.meta) for e in entries.values()):
            continue  # nothing compacted here yet
        needs_maps = any(not holds_maps(e.meta, wanted) for e in entries.values())
        if not (wanted and needs_maps) or _read_journal(_journal(store, category), ids, set(wanted)) is not None:
            continue  # nothing left to compute, or a cut compaction whose journal holds the maps
        _check_features_kept(store, category, ids, entries, pairs, wanted, draws)


def compact_store(store: CaptureStore, plan: Any, *, progress: bool = False) -> int:
    """Compact every category of a run's :class:`~cfviz.evaluation.plan.RunPlan`; entries rewritten."""
    from cfviz.utils.io import remove_stale_temp_files
    from cfviz.utils.progress import progress_bar

    if (store.path / JOURNAL_DIR).is_dir():
        remove_stale_temp_files(store.path / JOURNAL_DIR)
    bar = progress_bar(total=len(plan.compact), desc="compacting", unit="category", disable=not progress)
    n = 0
    try:
        for category, category_plan in plan.compact.items():
            n += compact_category(store, plan.dataset, category, extraction=plan.spec.extraction,
                                  scoring=plan.spec.scoring, plan=category_plan)
            bar.update(1)
    finally:
        bar.close()
    return n
