"""MapDiff maps: M_diff_L from captured attention, M_diff_V from feature memory banks."""

from __future__ import annotations

import pytest
import torch

import cfviz
from cfviz.diffusion.forward import build_prompt, mapdiff_forward
from cfviz.diffusion.mapdiff import language_map, match_channels, visual_map
from cfviz.errors import CfvizError


@pytest.fixture(scope="module")
def captured():
    from cfviz.models import tiny_inpaint_pipeline

    pipe = tiny_inpaint_pipeline(seed=0)
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prompt = build_prompt("bottle", "broken damage")
    with cfviz.capture(pipe, features=["up_blocks.1"], tokens=["broken", "damage"], prompt=prompt) as cap:
        mapdiff_forward(pipe, images, prompt, timesteps=[100, 400], seed=0)
    return cap.cache


def test_language_map_is_the_mean_over_steps_layers_and_tokens(captured) -> None:
    names = [n for n in captured.attention if min(captured.resolution(n)) >= 8]
    finest = max((captured.resolution(n) for n in names), key=lambda hw: hw[0] * hw[1])
    expected = captured.attention_maps(names, size=finest).data.float().mean(dim=(0, 1, 3))
    got = language_map(captured, min_resolution=8)
    assert tuple(got.shape) == (2, *finest)
    torch.testing.assert_close(got.float(), expected, atol=1e-3, rtol=1e-3)


def test_language_map_token_step_and_resolution_choices(captured) -> None:
    broken = language_map(captured, tokens="broken", min_resolution=1)
    damage = language_map(captured, tokens="damage", min_resolution=1)
    both = language_map(captured, min_resolution=1)
    torch.testing.assert_close(both.float(), (broken.float() + damage.float()) / 2, atol=1e-3, rtol=1e-3)
    first = language_map(captured, steps=[0], min_resolution=1)
    assert not torch.allclose(first.float(), both.float())
    with pytest.raises(CfvizError, match="min_resolution"):
        language_map(captured, min_resolution=10_000)


def test_visual_map_is_zero_on_a_reference_and_positive_elsewhere() -> None:
    g = torch.Generator().manual_seed(0)
    refs = torch.randn(2, 16, 6, 6, generator=g)
    assert visual_map(refs[:1], refs).abs().max() < 1e-5
    query = refs[:1].clone()
    query[0, :, 2, 3] = torch.randn(16, generator=g)  # one foreign location
    d = visual_map(query, refs)[0]
    assert d[2, 3] == d.max() and d[2, 3] > 0.1
    assert d.flatten().topk(2).values[1] < 1e-5


def test_visual_map_across_blocks_of_different_width() -> None:
    g = torch.Generator().manual_seed(1)
    wide, narrow = torch.randn(1, 8, 4, 4, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    d = visual_map(wide, narrow)
    assert d.shape == (1, 4, 4) and torch.isfinite(d).all()
    pooled = match_channels(wide, 4)
    torch.testing.assert_close(pooled[:, 0], wide[:, :2].mean(dim=1))
    with pytest.raises(CfvizError, match="widen"):
        match_channels(narrow, 8)
