"""MapDiff's timesteps in one UNet call: the capture records what one call per timestep records.

Tiny inpainting pipeline, 64 px images. The maps agree with the per-timestep calls to float
tolerance (the UNet's kernels give batch-dependent last bits), the step labels and shapes are
the same, and a store refuses to mix entries of the two forms.
"""

from __future__ import annotations

import pytest
import torch

import cfviz
from cfviz.capture.store import CaptureStore
from cfviz.diffusion.batched import jobs_per_call, mapdiff_forward_batched, repeat_prompts, split_steps
from cfviz.diffusion.forward import mapdiff_forward
from cfviz.errors import CaptureError, CfvizError, StoreMismatchError

PROMPT = "a close-up cropped png photo of a grass with damage"


@pytest.fixture(scope="module")
def pipe():
    from cfviz.models import tiny_inpaint_pipeline

    return tiny_inpaint_pipeline(seed=0)


def _images(b: int) -> torch.Tensor:
    return torch.rand(b, 3, 64, 64, generator=torch.Generator().manual_seed(b)) * 2 - 1


def _run(pipe, images, timesteps, batched: bool, **kw):
    b = images.shape[0]
    prompts = [PROMPT] * b
    n = jobs_per_call(len(timesteps), kw.get("draws", 1), b, kw.get("max_rows")) if batched else 1
    with cfviz.capture(pipe, features=["up_blocks.1"], tokens=["damage", 1], prompt=repeat_prompts(prompts, n),
                       dtype=torch.float32) as cap:
        if batched:
            out = mapdiff_forward_batched(pipe, images, prompts, timesteps=timesteps, capture=cap, **kw)
        else:
            kw.pop("max_rows", None)
            out = mapdiff_forward(pipe, images, prompts, timesteps=timesteps, capture=cap, **kw)
    return out, cap.cache


@pytest.mark.parametrize("b, timesteps, kw", [
    (1, [100, 261, 400], {}),
    (2, [100, 261, 400], {}),
    (2, [100, 261, 400, 700], {"max_rows": 4}),  # two calls of two timesteps each
    (2, [100, 400], {"draws": 2, "noise": "per-image", "image_ids": ["a/1", "a/2"]}),
])
def test_batched_capture_equals_one_call_per_timestep(pipe, b, timesteps, kw) -> None:
    images = _images(b)
    want_out, want = _run(pipe, images, timesteps, batched=False, **dict(kw))
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        got_out, got = _run(pipe, images, timesteps, batched=True, **dict(kw))
    finally:
        handle.remove()
    jobs = len(timesteps) * kw.get("draws", 1)
    per_call = jobs_per_call(len(timesteps), kw.get("draws", 1), b, kw.get("max_rows"))
    assert calls == [per_call * b] * (jobs // per_call)  # fewer, bigger UNet calls
    assert got.steps == want.steps  # same step numbers, timesteps, rows, batch size, sample size
    assert got.timesteps == [float(t) for t in timesteps]
    assert got.tokens == want.tokens and got.labels == want.labels
    assert {k: v for k, v in got.settings.items() if k != "timesteps_batched"} == want.settings
    assert got.settings["timesteps_batched"] is True
    for table, ref in ((got.attention, want.attention), (got.features, want.features)):
        assert list(table) == list(ref)
        for name, per in ref.items():
            assert sorted(table[name]) == sorted(per)
            for s, t in per.items():
                assert table[name][s].shape == t.shape and table[name][s].dtype == t.dtype
                torch.testing.assert_close(table[name][s], t, rtol=1e-4, atol=1e-5)
    for g, w in zip(got_out, want_out):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_store_refuses_to_mix_batched_and_per_timestep_entries(pipe, tmp_path) -> None:
    images = _images(1)
    _, per_call = _run(pipe, images, [100, 400], batched=False)
    _, batched = _run(pipe, images, [100, 400], batched=True)
    store = CaptureStore(tmp_path / "s", {"t": 1})
    store.add("one", per_call)
    with pytest.raises(StoreMismatchError, match="timesteps_batched"):
        store.add("two", batched)


def test_capture_needs_the_prompt_of_every_row(pipe) -> None:
    images = _images(2)
    with pytest.raises(CaptureError, match="prompts"):
        with cfviz.capture(pipe, tokens=["damage"], prompt=[PROMPT] * 2) as cap:
            mapdiff_forward_batched(pipe, images, [PROMPT] * 2, timesteps=[100, 400], capture=cap)


def test_split_steps_refuses_rows_that_are_not_whole_groups(pipe) -> None:
    emb = torch.zeros(3, 77, pipe.text_encoder.config.hidden_size)
    with cfviz.capture(pipe, attention="*attn2") as cap:
        pipe.unet(torch.randn(3, 9, 8, 8), torch.tensor([100, 100, 400]), encoder_hidden_states=emb)
    with pytest.raises(CaptureError, match="whole groups of 2"):
        split_steps(cap.cache, 2)
    with pytest.raises(CaptureError, match="different timesteps"):
        split_steps(cap.cache, 3)


def test_jobs_per_call_and_bad_max_rows() -> None:
    assert jobs_per_call(3, 2, 1) == 6
    assert jobs_per_call(3, 2, 2, max_rows=8) == 3  # 6 jobs, at most 4 per call: equal calls of 3
    assert jobs_per_call(3, 1, 4, max_rows=2) == 1  # a call never holds less than one group
    with pytest.raises(CfvizError, match="max_rows"):
        jobs_per_call(3, 1, 1, max_rows=0)


# ---------------------------------------------------------------------------------- in extract
@pytest.fixture(scope="module")
def extraction_setup(tmp_path_factory: pytest.TempPathFactory, pipe):
    from cfviz.data.textures import TexturesDataset, generate_textures
    from cfviz.experiments import ExtractionConfig
    from cfviz.evaluation.config import ModelChoice
    from cfviz.evaluation.models import LoadedModels
    from cfviz.models import tiny_clip

    params = dict(image_size=64, n_train=1, n_test_good=2, n_per_defect=1, defect_kinds=["hole"])
    root = generate_textures(tmp_path_factory.mktemp("batched") / "tex", seed=2, categories=["grass"], **params)
    data = TexturesDataset(root, categories="grass", split="all", seed=2, categories_generated=["grass"], **params)
    models = LoadedModels(clip=tiny_clip(seed=0), pipe=pipe, choice=ModelChoice())
    return data, models, ExtractionConfig(diffusion_size=64, timesteps=(100, 261, 400))


@pytest.mark.parametrize("batch_timesteps", [True, 4])
def test_extract_with_batched_timesteps_stores_the_same_maps(extraction_setup, tmp_path, batch_timesteps) -> None:
    from cfviz.evaluation.extraction import extract

    data, models, extraction = extraction_setup
    stores = {}
    tests = [r for r in data.records if r.split == "test"]
    for form in (False, batch_timesteps):
        stores[form] = CaptureStore(tmp_path / str(form), {"t": 1})
        extract(data, tests, models, extraction, stores[form], batch_size=2, progress=False, batch_timesteps=form)
    plain, batched = stores[False], stores[batch_timesteps]
    assert plain.ids == batched.ids and len(plain.ids) == 3  # batches of 2 and 1
    for image_id in plain.ids:
        a, b = plain[image_id], batched[image_id]
        assert a.steps == b.steps and a.names == b.names and a.metadata == b.metadata
        assert b.meta["capture"] == {**a.meta["capture"], "timesteps_batched": True}
        ta, tb = a.load(), b.load()
        for name in a.names:
            if name.startswith(("attn/", "feat/")):  # the UNet's batch-dependent last bits (float16 maps)
                torch.testing.assert_close(tb[name].float(), ta[name].float(), rtol=2e-3, atol=2e-3)
            else:  # CLIP is untouched
                assert torch.equal(tb[name], ta[name]), name
    with pytest.raises(StoreMismatchError, match="timesteps_batched"):  # never mixed into a per-timestep store
        extract(data, data.records, models, extraction, CaptureStore(tmp_path / "False", {"t": 1}), batch_size=2,
                progress=False, batch_timesteps=batch_timesteps)  # the reference is not stored yet


@pytest.mark.parametrize("bad", [0, -1, 1.5, "yes"])  # None: extraction.batch_timesteps (the run's setting)
def test_extract_refuses_a_bad_batch_timesteps(extraction_setup, tmp_path, bad) -> None:
    from cfviz.evaluation.extraction import extract

    data, models, extraction = extraction_setup
    with pytest.raises(CfvizError, match="batch_timesteps must be"):
        extract(data, data.records, models, extraction, CaptureStore(tmp_path / "s", {"t": 1}), progress=False,
                batch_timesteps=bad)
