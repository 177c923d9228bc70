"""Store-based ablations (matching table, alpha sweep) and failure-case rankings."""

from __future__ import annotations

import numpy as np
import pytest

from cfviz.analysis import ablations, failures
from cfviz.evaluation.scoring import Predictions


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from cfviz.notebooks import setup

    base = tmp_path_factory.mktemp("ablations")
    return setup(smoke=True, run_dir=base / "run", figures_dir=base / "figures")


def test_matching_table_covers_every_pair(session) -> None:  # type: ignore[no-untyped-def]
    t = ablations.matching_table(session.store, session.dataset, kind="timestep", shots=1, seeds=[0])
    ts = list(session.spec.extraction.timesteps)
    assert set(zip(t["query"], t["reference"])) == {(q, r) for q in ts for r in ts}
    assert set(t.metric) == set(ablations.DEFAULT_METRICS)
    assert t["value"].between(0, 1).all()
    assert (t["matched"] == (t["query"] == t["reference"])).all()
    # the matched default equals M_diff_V as predict() makes it (query = reference by default)
    b = ablations.matching_table(session.store, session.dataset, kind="block", pairs=[("up_blocks.1", "up_blocks.2")],
                                 width_bridge="average")  # the tiny UNet's up1 is 64 wide, up2 32
    assert set(b["query"]) == {"up1"} and set(b["reference"]) == {"up2"} and not b["matched"].any()
    assert b["bridged"].all()
    # blocks go by their short names, in and out (one name per block everywhere)
    short = ablations.matching_table(session.store, session.dataset, kind="block", pairs=[("up1", "up2")],
                                     width_bridge="average")
    assert short.drop(columns="value").equals(b.drop(columns="value"))
    np.testing.assert_allclose(short["value"], b["value"])
    # a mismatched pair gives other maps than the matched one
    a = t[(t.metric == "pixel_auroc")].set_index(["query", "reference"])["value"]
    assert a.nunique() > 1


def test_block_pairs_of_different_widths_only_with_a_named_bridge(session) -> None:  # type: ignore[no-untyped-def]
    """Issue 20: the default block grid compares only blocks of equal width; bridging is an option."""
    from cfviz.analysis.block_widths import stored_block_widths, unet_block_widths
    from cfviz.models._config import model_config

    blocks = list(session.spec.extraction.features)
    widths = stored_block_widths(session.store, blocks)
    assert widths == {b: unet_block_widths(model_config("tiny_inpainting_unet"))[b] for b in blocks}
    t = ablations.matching_table(session.store, session.dataset, kind="block", shots=1, seeds=[0])
    named = {"up0": "up_blocks.0", "up1": "up_blocks.1", "up2": "up_blocks.2", "up3": "up_blocks.3"}
    pairs = set(zip(t["query"], t["reference"]))
    assert pairs and all(widths[named[q]] == widths[named[r]] for q, r in pairs)
    assert not t["bridged"].any()
    every = ablations.matching_table(session.store, session.dataset, kind="block", shots=1, seeds=[0],
                                     width_bridge="average")
    assert pairs < set(zip(every["query"], every["reference"]))
    assert len(set(zip(every["query"], every["reference"]))) == len(blocks) ** 2
    assert (every["bridged"] == [widths[named[q]] != widths[named[r]] for q, r in zip(every["query"],
                                                                                       every["reference"])]).all()
    with pytest.raises(ValueError, match="width_bridge='average'"):
        ablations.matching_table(session.store, session.dataset, kind="block", pairs=[("up1", "up2")])
    with pytest.raises(ValueError, match="width_bridge must be one of none, average"):
        ablations.matching_table(session.store, session.dataset, kind="block", width_bridge="pad")


def test_sd2_equal_width_pairs_are_documented() -> None:
    from cfviz.analysis.block_widths import equal_width_pairs, unet_block_widths
    from cfviz.models._config import model_config

    w = unet_block_widths(model_config("sd2_inpainting_unet"))
    ups = ["up_blocks.1", "up_blocks.2", "up_blocks.3"]
    assert equal_width_pairs(ups, w) == [(b, b) for b in ups]  # the decoder's grid: matched pairs only
    assert {b for b, c in w.items() if c == 1280} == {"down_blocks.2", "down_blocks.3", "mid_block", "up_blocks.0",
                                                      "up_blocks.1"}


def test_matching_table_refuses_unstored_blocks(session) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="were not stored"):
        ablations.matching_table(session.store, session.dataset, kind="block", pairs=[("down_blocks.0", "up_blocks.1")])
    with pytest.raises(ValueError, match="needs k >= 1"):
        ablations.matching_table(session.store, session.dataset, shots=0)


def test_alpha_sweep_ends_match_the_branches(session) -> None:  # type: ignore[no-untyped-def]
    s = ablations.alpha_sweep(session.store, session.dataset, alphas=[0.0, 0.25, 1.0], shots=[0, 1])
    assert set(s.alpha) == {0.0, 0.25, 1.0} and set(s.shots) == {0, 1}
    assert set(s.task) == {"segmentation", "classification"}
    p = session.predict("brick", "patchclip", shots=1)
    from cfviz.metrics import image_metrics

    clip_auroc = image_metrics(p.labels, p.scores)["image_auroc"]
    got = s[(s.alpha == 1.0) & (s.shots == 1) & (s.metric == "image_auroc")]["value"].item()
    assert got == pytest.approx(clip_auroc)  # alpha = 1 is CLIP alone
    with pytest.raises(ValueError, match=r"alphas must lie in \[0, 1\]"):
        ablations.alpha_sweep(session.store, session.dataset, alphas=[1.5])
    m = ablations.mean_over_categories(s, ["shots", "alpha", "metric"])
    assert "mean" in set(m.category)


def _preds() -> Predictions:
    rng = np.random.default_rng(0)
    comps = {k: rng.random((6, 8, 8)).astype(np.float32) for k in ("clip_language", "diff_language")}
    comps["diff_language"][0] = comps["clip_language"][0]  # image 0: branches agree exactly
    return Predictions(method="clipfusion", category="c", shots=0, seed=0, image_ids=list("abcdef"),
                       labels=np.array([0, 0, 0, 1, 1, 1]), masks=None, maps=np.zeros((6, 8, 8), np.float32),
                       scores=np.array([0.1, 0.7, 0.3, 0.9, 0.2, 0.8], np.float32), components=comps,
                       component_scores={"clip": np.zeros(6), "diff": np.ones(6)},
                       defect_types=["good", "good", "good", "hole", "cut", "hole"])


def test_rank_failures_orders_worst_first() -> None:
    r = failures.rank_failures(_preds(), k=2)
    fp, fn = r[r.kind == "false positive"], r[r.kind == "false negative"]
    assert fp.image_id.tolist() == ["b", "c"] and fn.image_id.tolist() == ["e", "f"]
    assert fn["wrong"].iloc[0]  # e (0.2) is below every F1-max threshold here
    assert fn["case"].iloc[0] == "false negative #1"
    assert all(c.endswith("(correct)") for c in r.loc[~r.wrong, "case"])
    with pytest.raises(ValueError, match="k must be >= 1"):
        failures.rank_failures(_preds(), k=0)


def test_defect_breakdown_and_disagreement() -> None:
    b = failures.defect_breakdown(_preds(), threshold=0.5).set_index("defect_type")
    assert b.loc["hole", "detected"] == 1.0 and b.loc["cut", "detected"] == 0.0
    assert b.loc["good", "detected"] == pytest.approx(1 / 3)
    d = failures.disagreement(_preds())
    assert d.image_id.iloc[-1] == "a" and d.mean_abs_difference.iloc[-1] == pytest.approx(0.0)
    assert d.correlation[d.image_id == "a"].item() == pytest.approx(1.0)


def test_the_export_names_bridged_pairs(session) -> None:  # type: ignore[no-untyped-def]
    from cfviz.analysis.export import matching_export

    plain = matching_export(ablations.matching_table(session.store, session.dataset, kind="block"))
    assert not any("averaging adjacent channels" in n for n in plain.notes)
    bridged = matching_export(ablations.matching_table(session.store, session.dataset, kind="block",
                                                       width_bridge="average"))
    assert any("averaging adjacent channels" in n and "up1/up2" in n for n in bridged.notes)
