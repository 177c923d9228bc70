"""Issue 20, notebook 08's sensitivity study: each knob only with the metrics it can move, effects with
their spread over seeds, and the methods under one shared rule vs their own favourite settings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cfviz.analysis import sensitivity
from cfviz.analysis.ablations import design_choices


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from cfviz.notebooks import setup

    base = tmp_path_factory.mktemp("sensitivity")
    return setup(smoke=True, run_dir=base / "run", figures_dir=base / "figures", seeds=[0, 1, 2])


def test_the_metric_kinds_are_what_the_knobs_can_move(session) -> None:  # type: ignore[no-untyped-def]
    """The study asks the comparison rule's own knob metadata (ablations.metric_kinds), under the rule in force:
    under "own" PatchCLIP's language map never reaches an image score, under "eq9" it does; the score rule never
    reaches a map (whatever the data, so also whatever the metric)."""
    from dataclasses import replace

    from cfviz.evaluation.scoring import predict

    own = replace(session.spec.scoring, image_score="own")
    assert sensitivity.metric_kinds("patchclip_language", own) == ("pixel",)
    assert sensitivity.metric_kinds("patchclip_language", session.spec.scoring) == ("image", "pixel")
    assert sensitivity.metric_kinds("score_rule") == ("image",)
    assert sensitivity.metric_kinds("noise_draws") == ("image", "pixel")  # any other knob: both
    for method in ("clipfusion", "patchclip"):
        for k in (0, 1):
            def run(**change):  # type: ignore[no-untyped-def]
                return predict(session.store, session.dataset, "brick", method, shots=k, seed=0,
                               scoring=replace(own, **change))
            ref = run()
            for form in ("mean", "windows"):
                other = run(patchclip_language=form)
                assert np.array_equal(other.scores, ref.scores), (method, k, form)
                assert not np.array_equal(other.maps, ref.maps)
            for rule in ("mean", "topk_mean"):
                assert np.array_equal(run(score_rule=rule).maps, ref.maps), (method, k, rule)


def test_effects_keep_only_movable_metrics_with_the_spread_over_seeds(session) -> None:  # type: ignore[no-untyped-def]
    table = design_choices(session.store, session.dataset, methods=["clipfusion"], shots=[0, 1], seeds=[0, 1, 2],
                           scoring=session.spec.scoring, knobs={"patchclip_language": ("mean",), "sigma": (0.0,)})
    effects = sensitivity.knob_effects(table, session.spec.scoring)
    assert set(effects[effects.knob == "patchclip_language"].kind) == {"image", "pixel"}  # eq9 reads the map
    own = sensitivity.knob_effects(table, replace(session.spec.scoring, image_score="own"))
    assert set(own[own.knob == "patchclip_language"].kind) == {"pixel"}
    assert set(effects[effects.knob == "sigma"].kind) == {"image", "pixel"}
    k1 = effects[effects.shots == 1]
    assert (k1.seeds == 3).all() and (effects[effects.shots == 0].seeds == 1).all()
    assert (effects[effects["default"]].delta == 0).all()
    # the difference is paired per seed: its mean is the difference of the means
    row = k1[(k1.knob == "sigma") & ~k1["default"] & (k1.metric == "pixel_auroc")].iloc[0]
    part = table[(table.knob == "sigma") & (table.shots == 1) & (table.metric == "pixel_auroc")]
    means = part.groupby("default")["value"].mean()
    assert row.delta == pytest.approx(means[False] - means[True])
    assert row.delta_std == pytest.approx(float(np.std(
        part[~part["default"]].groupby("seed")["value"].mean().to_numpy()
        - part[part["default"]].groupby("seed")["value"].mean().to_numpy(), ddof=1)))


def test_methods_under_the_shared_rule_and_their_favourites(session) -> None:  # type: ignore[no-untyped-def]
    methods = ["clipfusion", "patchclip", "mapdiff", "winclip"]
    frame = sensitivity.compare_methods(session.store, session.dataset, methods=methods, shots=[0, 1], seeds=[0, 1],
                                        shared=session.spec.scoring)
    assert set(frame.rule) == {"shared", "favourite"} and set(frame.method) == set(methods)
    both = frame.pivot_table(index=["method", "category", "shots", "seed", "metric"], columns="rule", values="value")
    same = (both["shared"] - both["favourite"]).abs().groupby("method").max()
    assert same["clipfusion"] == 0 and same["mapdiff"] == 0  # no favourites: the shared rule itself
    assert same["patchclip"] > 0  # its window forms
    # the shared rows are the run's own rows (one rule, the run's settings)
    ran = session.result.frame.set_index(["method", "category", "shots", "seed", "metric"])["value"]
    shown = [key for key in both.index if key in ran.index]
    assert {k[0] for k in shown} == set(session.spec.methods)
    for key in shown:
        assert both["shared"][key] == pytest.approx(ran.loc[key])


def test_the_figures(session) -> None:  # type: ignore[no-untyped-def]
    import cfviz.viz as viz

    table = design_choices(session.store, session.dataset, methods=["clipfusion"], shots=[1], seeds=[0, 1],
                           scoring=session.spec.scoring, knobs={"patchclip_language": ("mean",), "sigma": (0.0,)})
    own = replace(session.spec.scoring, image_score="own")  # under which PatchCLIP's map reaches no image score
    fig = viz.knob_sensitivity(sensitivity.knob_effects(table, own), shots=1,
                               kinds=lambda knob: sensitivity.metric_kinds(knob, own))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count(" cannot move") == 1  # patchclip_language in the image panel
    frame = sensitivity.compare_methods(session.store, session.dataset, methods=["clipfusion", "winclip"],
                                        shots=[1], seeds=[0, 1], shared=session.spec.scoring)
    fig = viz.method_comparison(frame, shots=1)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["one shared rule for every method, k=1",
                                                       "each method's favourite settings, k=1"]
