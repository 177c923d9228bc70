"""The runner's CLIP branch, replayed from stored embeddings, equals PatchCLIP and WinCLIP run on images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfviz.capture.store import CaptureStore
from cfviz.clip import PatchCLIP, WinCLIP
from cfviz.experiments import ExtractionConfig
from cfviz.evaluation import clip_branch

EXTRACTION = ExtractionConfig()


@pytest.fixture(scope="module")
def bundle():
    from cfviz.models import tiny_clip

    return tiny_clip(seed=0)


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(3, 3, 240, 240, generator=g), torch.randn(2, 3, 240, 240, generator=g)


@pytest.fixture(scope="module")
def stored(bundle, images, tmp_path_factory):
    """A store with the queries' zero-shot outputs, written as the runner writes them (float32 here)."""
    queries, refs = images
    store = CaptureStore(tmp_path_factory.mktemp("store"))
    emb = clip_branch.embed(bundle, queries, EXTRACTION)
    for i in range(queries.shape[0]):
        one = {k: v[i:i + 1] for k, v in emb.items()}
        scores, arrays = clip_branch.zero_shot_scores(bundle, one, "wood", EXTRACTION)
        store.add(f"q{i}", clip=scores, arrays={**{k: v[i] for k, v in emb.items()}, **arrays})
    return store, emb, clip_branch.embed(bundle, refs, EXTRACTION)


def test_embeddings_have_documented_names_and_shapes(stored) -> None:
    _, emb, _ = stored
    assert emb["clip_emb/image"].shape[0] == 3
    assert emb["clip_emb/patches"].shape[1] == 15 * 15
    assert emb["clip_emb/window/2"].shape[1] == 14 * 14 and emb["clip_emb/window/3"].shape[1] == 13 * 13


def test_zero_shot_language_map_equals_patchclip(bundle, images, stored) -> None:
    store, _, _ = stored
    lang, score = clip_branch.stored_language(store, ["q0", "q1", "q2"])
    ref = PatchCLIP(bundle, class_name="wood").predict(images[0])
    np.testing.assert_allclose(lang, ref.language_map.numpy(), atol=1e-6)
    np.testing.assert_allclose(score, ref.image_score.numpy(), atol=1e-6)


def test_visual_map_equals_fitted_patchclip(bundle, images, stored) -> None:
    queries, refs = images
    _, emb, ref_emb = stored
    vis, vis_max = clip_branch.visual(emb, ref_emb, EXTRACTION)
    expected = PatchCLIP(bundle, class_name="wood").fit(refs).predict(queries)
    np.testing.assert_allclose(vis, expected.visual_map.numpy(), atol=1e-5)
    zero_shot = expected.zero_shot_image.numpy()
    np.testing.assert_allclose(clip_branch.combine_image_scores(zero_shot, vis_max),
                               expected.image_score.numpy(), atol=1e-5)


@pytest.mark.parametrize("shots", [0, 2])
def test_winclip_from_store_equals_winclip(bundle, images, stored, shots) -> None:
    queries, refs = images
    store, emb, ref_emb = stored
    model = WinCLIP(bundle, class_name="wood")
    if shots:
        model.fit(refs)
    expected = model.predict(queries)
    wmap, wscore = clip_branch.winclip(store, ["q0", "q1", "q2"], emb, ref_emb if shots else None, EXTRACTION)
    np.testing.assert_allclose(wmap, expected.anomaly_map.numpy(), atol=1e-5)
    np.testing.assert_allclose(wscore, expected.image_score.numpy(), atol=1e-5)


def test_winclip_plus_needs_query_embeddings(stored) -> None:
    store, _, ref_emb = stored
    with pytest.raises(ValueError, match="query embeddings"):
        clip_branch.winclip(store, ["q0"], None, ref_emb, EXTRACTION)
