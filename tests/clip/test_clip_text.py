"""Text anchors and their cache."""

from __future__ import annotations

import pytest
import torch

from cfviz.clip.prompts import prompt_ensemble
from cfviz.clip.text import (anchors_from_embeddings, clear_text_cache, encode_prompts, text_anchors,
                             text_cache_info)
from cfviz.clip.winclip import WinCLIP


@pytest.fixture()
def fresh_bundle():
    """A private tiny CLIP (the cache is keyed by model, so counts start at zero)."""
    from cfviz.models.clip import tiny_clip

    return tiny_clip(seed=3)


@pytest.fixture()
def count_encode(monkeypatch):
    def install(bundle):
        calls = []
        real = bundle.model.encode_text

        def counting(*args, **kwargs):
            calls.append(args[0].shape[0])
            return real(*args, **kwargs)
        monkeypatch.setattr(bundle.model, "encode_text", counting)
        return calls
    return install


def test_anchor_definition(fresh_bundle):
    normal, anomalous = prompt_ensemble("hazelnut")
    emb = encode_prompts(fresh_bundle, normal + anomalous)
    n = torch.nn.functional.normalize(emb, dim=-1)
    expected = torch.stack([n[:147].mean(0), n[147:].mean(0)])
    expected = expected / expected.norm(dim=1, keepdim=True)
    got = text_anchors(fresh_bundle, "hazelnut")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    raw = torch.stack([emb[:147].mean(0), emb[147:].mean(0)])  # anomalib: average unnormalised
    raw = raw / raw.norm(dim=1, keepdim=True)
    torch.testing.assert_close(text_anchors(fresh_bundle, "hazelnut", normalize_prompts=False), raw,
                               rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, raw, atol=1e-6)  # the option matters


def test_normalise_then_average_weights_prompts_equally():
    normal = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    anomalous = torch.tensor([[1.0, 1.0]])
    a = anchors_from_embeddings(normal, anomalous)
    torch.testing.assert_close(a[0], torch.tensor([0.7071068, 0.7071068]))
    b = anchors_from_embeddings(normal, anomalous, normalize_prompts=False)
    assert b[0, 0] > 0.99  # dominated by the long embedding


def test_cache_encodes_each_class_once(fresh_bundle, count_encode):
    calls = count_encode(fresh_bundle)
    before = text_cache_info()
    a1 = WinCLIP(fresh_bundle, class_name="bottle").text
    a2 = WinCLIP(fresh_bundle, class_name="bottle").text  # another model object, same class
    m = WinCLIP(fresh_bundle, class_name="bottle")
    m.predict(torch.zeros(1, 3, 240, 240))
    m.predict(torch.zeros(1, 3, 240, 240))
    assert calls == [231]  # 147 + 84 prompts, one encode call
    torch.testing.assert_close(a1, a2)
    WinCLIP(fresh_bundle, class_name="cable").text
    assert len(calls) == 2
    text_anchors(fresh_bundle, "bottle", normalize_prompts=False)  # different anchors, new entry
    text_anchors(fresh_bundle, "bottle", cache=False)
    assert len(calls) == 4
    info = text_cache_info()
    assert info["entries"] - before["entries"] == 3 and info["hits"] - before["hits"] == 2
    clear_text_cache(fresh_bundle)  # only this model's entries
    assert text_cache_info()["entries"] == before["entries"]
    text_anchors(fresh_bundle, "bottle")
    assert len(calls) == 5


def test_cached_anchors_are_copies(fresh_bundle):
    a = text_anchors(fresh_bundle, "tile")
    a.zero_()
    assert text_anchors(fresh_bundle, "tile").abs().sum() > 0


def test_custom_prompts(fresh_bundle):
    a = text_anchors(fresh_bundle, prompts=(["a photo of a good tile."], ["a photo of a cracked tile."]))
    assert a.shape == (2, 32)
    with pytest.raises(ValueError, match="normal prompts"):
        text_anchors(fresh_bundle, prompts=([], ["x"]))
    with pytest.raises(ValueError, match="anomalous prompts"):
        text_anchors(fresh_bundle, prompts=(["x"], "a photo"))
