"""Precision and speed options of the models (issue 12): ``--dtype``, SDPA under capture,
``--compile`` and ``--channels-last``, on the tiny models on the CPU.

bfloat16 on the CPU proves the reduced-precision path (GPUs run the same code in float16);
``torch.compile`` is tested with the ``aot_eager`` backend, which traces and partitions like
``inductor`` but needs no C++ compiler and no minutes of kernel generation (inductor on this CPU
takes ~100 s for the tiny UNet; benchmarks/bench_dtype.py times it on the full-size models).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import cfviz
from cfviz.errors import ConfigError
from cfviz.evaluation.config import ModelChoice, RunSpec
from cfviz.evaluation.models import load_models

_CONFTEST = Path(__file__).parent / "capture" / "conftest.py"


def _capture_conftest():
    """tests/capture's conftest: its one independent recomputation (softmax(Q K^T * scale) from a
    layer's inputs) and the captured call that keeps each layer's inputs."""
    spec = importlib.util.spec_from_file_location("cfviz_capture_conftest", _CONFTEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfviz.data.textures import generate_textures

    return generate_textures(tmp_path_factory.mktemp("tex"), seed=3, image_size=64, n_train=2, n_test_good=1,
                             n_per_defect=1, categories=["grass"], defect_kinds=["stain"])


def _images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _capture_mapdiff(pipe, **capture_kwargs):
    from cfviz.diffusion.forward import mapdiff_forward

    prompts = ["a photo of a grass with damage"] * 2
    with torch.inference_mode(), cfviz.capture(pipe, features=["up_blocks.1"], tokens=["damage"], prompt=prompts,
                                               **capture_kwargs) as cap:
        out = mapdiff_forward(pipe, _images(), prompts, timesteps=(100, 400), seed=0)
    return cap.cache, out


# ------------------------------------------------------------------------------------------- dtype


def _parameter_dtypes(models) -> dict[str, set[torch.dtype]]:
    parts = {"clip": models.clip.model, "unet": models.pipe.unet, "vae": models.pipe.vae,
             "text_encoder": models.pipe.text_encoder}
    return {name: {p.dtype for p in m.parameters()} for name, m in parts.items()}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_tiny_models_are_built_in_the_asked_dtype(dtype: str) -> None:
    want = getattr(torch, dtype)
    models = load_models(ModelChoice(clip="tiny", diffusion="tiny", dtype=dtype))
    assert _parameter_dtypes(models) == {k: {want} for k in ("clip", "unet", "vae", "text_encoder")}
    assert models.info()["clip"]["dtype"] == dtype and models.info()["diffusion"]["dtype"] == dtype


def test_bfloat16_run_end_to_end_on_the_cli(small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cfviz evaluate --clip tiny --diffusion tiny --dtype bfloat16`: every model runs in bf16 (its
    floating inputs too), the store records the dtype and keeps its documented float16 maps, results.csv is written."""
    from cfviz.cli import main
    from cfviz.evaluation import models as models_module

    seen: dict[str, set[torch.dtype]] = {}
    real_load = models_module.load_models

    def load_and_watch(choice):
        loaded = real_load(choice)
        watched = {"clip": loaded.clip.model.visual.transformer, "clip_text": loaded.clip.model.transformer,
                   "vae": loaded.pipe.vae.encoder, "unet": loaded.pipe.unet}
        for name, module in watched.items():
            def hook(_m, args, kwargs, _name=name):
                tensors = [t for t in (*args, *kwargs.values()) if torch.is_tensor(t) and t.is_floating_point()]
                seen.setdefault(_name, set()).update(t.dtype for t in tensors)
            module.register_forward_pre_hook(hook, with_kwargs=True)
        return loaded

    monkeypatch.setattr(models_module, "load_models", load_and_watch)
    code = main(["evaluate", "--dataset", "folder", "--root", str(small_root), "--clip", "tiny", "--diffusion", "tiny",
                 "--dtype", "bfloat16", "--method", "clipfusion", "winclip", "--shots", "0", "1",
                 "--timesteps", "100", "400", "--diffusion-size", "64", "--min-resolution", "1", "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 0
    assert seen == {k: {torch.bfloat16} for k in ("clip", "clip_text", "vae", "unet")}
    header = json.loads((tmp_path / "store" / "store.json").read_text())
    assert header["config"]["models"]["dtype"] == "bfloat16"
    frame = pd.read_csv(tmp_path / "results.csv")
    assert set(frame["method"]) == {"clipfusion", "winclip"} and frame["value"].notna().all()
    # the stored maps and embeddings are float16 whatever the models' dtype (CLIP scores float32)
    from cfviz.capture.store import CaptureStore

    store = CaptureStore(tmp_path / "store")
    entry = store[store.ids[0]]
    tensors = entry.load()
    for name, t in tensors.items():
        if name.startswith(("attn/", "feat/", "clip_emb/")):
            assert t.dtype == torch.float16, name
        elif t.is_floating_point():
            assert t.dtype == torch.float32, name


def test_bfloat16_capture_equals_direct_recomputation() -> None:
    """Recorded attention of a bf16 UNet = softmax(Q K^T * scale) recomputed from each layer's own
    (bf16) inputs, at bf16 tolerance; rows still sum to one."""
    helpers = _capture_conftest()
    direct_probabilities = helpers._direct_probabilities
    pipe = load_models(ModelChoice(dtype="bfloat16")).pipe
    unet = pipe.unet
    assert unet.dtype == torch.bfloat16
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 16, 24, generator=g).to(torch.bfloat16)
    emb = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g).to(torch.bfloat16)
    cap, layers, seen = helpers._capture_with_layer_inputs(unet, x, emb)
    for name, attn in layers.items():
        hidden, context = seen[name]
        assert hidden.dtype == context.dtype == torch.bfloat16
        with torch.no_grad():
            direct = direct_probabilities(attn, hidden, context).float()  # (b, H, n, 77), computed in bf16
        rec = cap.cache.attention[name][0]  # (b, H, K=77, h, w)
        # bf16 has 8 bits of mantissa: probabilities agree to ~1e-2 relative
        torch.testing.assert_close(rec.flatten(3).transpose(2, 3), direct, rtol=2e-2, atol=5e-3)
        torch.testing.assert_close(rec.sum(2), torch.ones_like(rec.sum(2)), rtol=1e-5, atol=1e-5)


def test_dtype_is_part_of_the_store_identity() -> None:
    from cfviz.evaluation.runner import store_identity

    assert store_identity(RunSpec(models=ModelChoice(dtype="bfloat16")))["models"]["dtype"] == "bfloat16"
    assert store_identity(RunSpec())["models"]["dtype"] == "float32"


# -------------------------------------------------------------------------------------------- SDPA


def test_capture_keeps_sdpa_for_every_attention_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under capture every attention layer's output still comes from scaled_dot_product_attention
    (the recorder computes its float32 probabilities beside it, it does not replace the kernel)."""
    import torch.nn.functional as F

    from cfviz.models import tiny_inpaint_pipeline

    pipe = tiny_inpaint_pipeline(seed=0)
    unet = pipe.unet
    n_layers = sum(1 for n, m in unet.named_modules() if hasattr(m, "get_processor"))
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    x = torch.randn(1, 9, 16, 16, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        plain = unet(x, 400, encoder_hidden_states=emb).sample
        n_plain = len(calls)
        calls.clear()
        with cfviz.capture(unet, features=["up_blocks.1"]) as cap:
            captured = unet(x, 400, encoder_hidden_states=emb).sample
    assert n_plain == n_layers and len(calls) == n_layers  # one SDPA call per layer, with capture too
    assert len(cap.layers) >= 4 and torch.equal(plain, captured)


# ----------------------------------------------------------------------------- compile, channels_last


def test_speed_settings_are_validated_and_named() -> None:
    with pytest.raises(ConfigError, match="models.compile") as err:
        ModelChoice(compile="fast")
    assert "inductor" in str(err.value)
    with pytest.raises(ConfigError, match="models.channels_last"):
        ModelChoice(channels_last="yes")


def test_cli_flags_reach_the_model_choice(capsys: pytest.CaptureFixture[str]) -> None:
    from cfviz.cli import build_parser
    from cfviz.commands.evaluate import spec_from_args

    parser = build_parser()
    m = spec_from_args(parser.parse_args(["evaluate", "--compile", "--channels-last"])).models
    assert (m.compile, m.channels_last) == ("inductor", True)
    assert spec_from_args(parser.parse_args(["evaluate", "--compile", "aot_eager"])).models.compile == "aot_eager"
    m = spec_from_args(parser.parse_args(["evaluate"])).models
    assert (m.compile, m.channels_last) == ("off", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--compile", "fast"])
    assert "--compile" in capsys.readouterr().err


def test_inductor_without_a_compiler_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from cfviz import models

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(models, "tiny_clip", lambda *a, **k: pytest.fail("a model was built"), raising=False)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler") as err:
        load_models(ModelChoice(compile="inductor"))
    assert err.value.args[0].startswith("models.compile") or "models.compile" in str(err.value)


def test_inductor_without_a_compiler_is_refused_before_the_data_set_is_opened(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Preflight says it: no textures are generated and no store or output folder is written."""
    import shutil

    from cfviz.cli import main
    from cfviz.data import textures

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(textures, "generate_textures", lambda *a, **k: pytest.fail("the data set was generated"))
    root = tmp_path / "tex"
    code = main(["evaluate", "--dataset", "textures", "--root", str(root), "--compile", "inductor",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--compile" in err and "C++ compiler" in err and "Traceback" not in err
    assert not root.exists() and not (tmp_path / "out" / "store").exists()


def test_float16_on_a_cpu_without_half_kernels_is_refused_before_the_data_set(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """torch < 2.2 has no CPU float16 layer norm: one line naming --dtype (bfloat16, or a GPU), not a traceback."""
    from cfviz.cli import main
    from cfviz.evaluation import preflight

    monkeypatch.setattr(preflight, "cpu_has_half_kernels", lambda: False)
    root = tmp_path / "tex"
    code = main(["evaluate", "--dataset", "textures", "--root", str(root), "--dtype", "float16",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "--dtype" in err and "bfloat16" in err and "--device cuda" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and not root.exists()


def test_speed_options_in_the_store_identity_only_when_they_change_numbers() -> None:
    from cfviz.evaluation.runner import model_identity

    plain = model_identity(ModelChoice())
    assert "compile" not in plain and "channels_last" not in plain  # stores written before them still match
    assert model_identity(ModelChoice(channels_last=True))["channels_last"] is True
    assert model_identity(ModelChoice(compile="inductor"))["compile"] == "inductor"
    assert model_identity(ModelChoice(compile="aot_eager")) == plain  # same kernels, same bits (test below)


def test_compiled_denoiser_is_captured_like_the_eager_one() -> None:
    """load_models compiles the ResNet, self-attention and feed-forward regions; capture (which
    hooks the UNet, its blocks and the attn2 processors) records the same maps, bit for bit with
    a backend that keeps the kernels (aot_eager), and the UNet's outputs are unchanged."""
    eager = load_models(ModelChoice()).pipe
    compiled = load_models(ModelChoice(compile="aot_eager")).pipe
    regions = [n for n, m in compiled.unet.named_modules()
               if getattr(m, "_compiled_call_impl", None) is not None or "forward" in vars(m)]  # torch < 2.2: forward
    assert regions and all(n.endswith((".attn1", ".ff")) or ".resnets." in n for n in regions)
    assert not any(n.endswith(".attn2") for n in regions)
    a, out_a = _capture_mapdiff(eager)
    b, out_b = _capture_mapdiff(compiled)
    for x, y in zip(out_a, out_b):
        assert torch.equal(x, y)
    assert set(a.attention) == set(b.attention) and len(a.attention) >= 4
    for name in a.attention:
        for step in a.attention[name]:
            assert torch.equal(a.attention[name][step], b.attention[name][step]), name
    for name in a.features:
        for step in a.features[name]:
            assert torch.equal(a.features[name][step], b.features[name][step]), name
    # a second capture on the compiled model (new recorders) works too
    c, _ = _capture_mapdiff(compiled)
    assert set(c.attention) == set(a.attention)


def test_channels_last_outputs_equal_default_within_float32_tolerance() -> None:
    default = load_models(ModelChoice()).pipe
    nhwc = load_models(ModelChoice(channels_last=True)).pipe
    assert nhwc.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    a, out_a = _capture_mapdiff(default, dtype=torch.float32)
    b, out_b = _capture_mapdiff(nhwc, dtype=torch.float32)
    for x, y in zip(out_a, out_b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
    for name in a.attention:
        for step in a.attention[name]:
            torch.testing.assert_close(a.attention[name][step], b.attention[name][step], rtol=1e-4, atol=1e-6)
    for name in a.features:
        for step in a.features[name]:
            torch.testing.assert_close(a.features[name][step], b.features[name][step], rtol=1e-4, atol=1e-4)
