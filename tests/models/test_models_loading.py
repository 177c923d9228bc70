"""Real-weight loaders: safe checkpoint reading, round trips, and fast one-sentence failures."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

import cfviz.models.hub as hub
from cfviz.errors import ModelUnavailableError
from cfviz.models import load_clip, load_inpaint_pipeline, model_info, save_clip_checkpoint, tiny_clip

FAST_S = 5.0  # "within seconds": generous for a loaded 2-core CI machine, far below any network time-out


@pytest.fixture(autouse=True)
def _heavy_imports_done() -> None:
    # time only cfviz's own work, not first imports
    import diffusers  # noqa: F401
    import huggingface_hub  # noqa: F401
    import open_clip  # noqa: F401


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not offline: the loaders must probe the (blocked) network instead of trusting the cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def _raises_fast(fn, *fragments: str) -> str:
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        fn()
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert elapsed < FAST_S, f"took {elapsed:.1f} s"
    assert not re.search(r"\.\s+[A-Z]", message) and "\n" not in message, f"not one sentence: {message}"
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def _encode(bundle) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(2, 3, 240, 240, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return bundle.model.encode_image(images), bundle.model.encode_text(bundle.tokenizer(["a crack", "a dent"]))


# ---------------------------------------------------------------------------------------- CLIP


def test_clip_safetensors_round_trip(tmp_path: Path) -> None:
    original = tiny_clip(seed=2)
    path = save_clip_checkpoint(original, tmp_path / "tiny.safetensors")
    loaded = load_clip("cfviz-tiny-clip", pretrained=path)
    for a, b in zip(_encode(original), _encode(loaded)):
        assert torch.equal(a, b)
    assert (loaded.weights, loaded.seed, loaded.pretrained) == ("pretrained", None, str(path))
    info = model_info(loaded)
    assert info["source"] == "local" and info["revision"] == str(path) and info["weights"] == "pretrained"


def test_clip_torch_state_dict_read_with_weights_only(tmp_path: Path) -> None:
    original = tiny_clip(seed=4)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in original.model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ddp.pt")
    loaded = load_clip("cfviz-tiny-clip", pretrained=tmp_path / "ddp.pt")
    assert torch.equal(_encode(original)[0], _encode(loaded)[0])


class _Booby:
    """Unpickling this would create a file: a stand-in for code execution through pickle."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_clip_refuses_pickled_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": tiny_clip(seed=0).model.state_dict(), "hook": _Booby(str(marker))},
               tmp_path / "evil.pt")
    _raises_fast(lambda: load_clip("cfviz-tiny-clip", pretrained=tmp_path / "evil.pt"),
                 "weights_only=True", ".safetensors")
    assert not marker.exists()


def test_clip_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "clip.safetensors"
    _raises_fast(lambda: load_clip(pretrained=missing), str(missing), "pretrained=", "CFVIZ_CLIP_CHECKPOINT")


def test_clip_env_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFVIZ_CLIP_CHECKPOINT", str(tmp_path / "gone.safetensors"))
    _raises_fast(load_clip, "gone.safetensors", "from CFVIZ_CLIP_CHECKPOINT")
    # the env var is read for the default call: a tiny checkpoint is recognised as the wrong architecture
    path = save_clip_checkpoint(tiny_clip(seed=0), tmp_path / "tiny.safetensors")
    monkeypatch.setenv("CFVIZ_CLIP_CHECKPOINT", str(path))
    _raises_fast(load_clip, "cfviz-tiny-clip", "name=")


def test_clip_checkpoint_must_fit(tmp_path: Path) -> None:
    from cfviz.utils.io import save_safetensors

    state = dict(tiny_clip(seed=0).model.state_dict())
    state.pop("text_projection")
    save_safetensors(tmp_path / "partial.safetensors", state)
    _raises_fast(lambda: load_clip("cfviz-tiny-clip", pretrained=tmp_path / "partial.safetensors"),
                 "does not fit", "text_projection")
    (tmp_path / "model.ckpt").write_bytes(b"x")
    _raises_fast(lambda: load_clip("cfviz-tiny-clip", pretrained=tmp_path / "model.ckpt"), "suffix")


def test_clip_bad_arguments() -> None:
    with pytest.raises(ValueError, match="open_clip.list_models"):
        load_clip("ViT-Nope", pretrained="x.safetensors")
    with pytest.raises(ValueError, match="laion400m_e32"):
        load_clip(pretrained="laion_does_not_exist")
    with pytest.raises(ValueError, match="random_clip"):
        load_clip(pretrained=None)


@pytest.mark.parametrize("tag", ["laion400m_e32", "laion400m_e31"])  # release URL and hub repository
def test_clip_offline_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _raises_fast(lambda: load_clip(pretrained=tag, cache_dir=tmp_path), tag, "HF_HUB_OFFLINE",
                 "CFVIZ_CLIP_CHECKPOINT", "pretrained=", str(tmp_path))


def _hub_repo(tag: str, name: str = "ViT-B-16-plus-240") -> str:
    """The Hugging Face repository the installed open_clip names for a tag ('' : a release URL only).

    open_clip 2.24 (`make test-oldest`) fetches both laion400m tags from GitHub release URLs;
    newer releases fetch laion400m_e31 from the hub.
    """
    import open_clip

    return open_clip.get_pretrained_cfg(name, tag).get("hf_hub", "")


@pytest.mark.usefixtures("online")
def test_clip_network_blocked_not_offline(tmp_path: Path) -> None:
    host = "huggingface.co" if _hub_repo("laion400m_e31") else "github.com"
    _raises_fast(lambda: load_clip(pretrained="laion400m_e31", cache_dir=tmp_path), "cannot be reached",
                 host, "CFVIZ_CLIP_CHECKPOINT")
    _raises_fast(lambda: load_clip(cache_dir=tmp_path), "cannot be reached", "github.com")


@pytest.mark.usefixtures("online")
def test_hanging_network_is_abandoned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hang(*args, **kwargs):  # a connect that never answers (e.g. a black-holed route)
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(hub, "PROBE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(socket, "create_connection", hang)
    try:
        _raises_fast(lambda: load_clip(pretrained="laion400m_e31", cache_dir=tmp_path), "cannot be reached",
                     "0.3 s")
    finally:
        release.set()


@pytest.mark.usefixtures("online")
def test_download_failure_after_good_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the probe says yes, then the download itself fails (here: the blocked socket)
    monkeypatch.setattr(hub, "reachable", lambda url, timeout=None: (True, ""))
    _raises_fast(lambda: load_inpaint_pipeline("acme/unknown", cache_dir=tmp_path), "could not be downloaded",
                 "acme/unknown", "CFVIZ_SD_INPAINT")


def test_hub_file_prefers_safetensors_then_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = _fake_hub_repo(tmp_path, "acme/clip", {"open_clip_pytorch_model.bin": b"bin"})
    names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    found = hub.hub_file("acme/clip", names, revision=None, cache_dir=tmp_path, what="w", fix="f")
    assert found == snap / "open_clip_pytorch_model.bin"
    (snap / "open_clip_model.safetensors").write_bytes(b"st")
    found = hub.hub_file("acme/clip", names, revision=None, cache_dir=tmp_path, what="w", fix="f")
    assert found == snap / "open_clip_model.safetensors"


# ------------------------------------------------------------------------------ SD inpainting

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub_repo(cache: Path, repo_id: str, files: dict[str, bytes] | None = None, source: Path | None = None) -> Path:
    """The Hugging Face cache layout: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    if source is not None:
        shutil.copytree(source, snap)
    snap.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        (snap / name).write_bytes(data)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


@pytest.fixture(scope="module")
def saved_pipe(tiny_pipe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "tiny-sd"
    tiny_pipe.save_pretrained(folder)
    return folder


def _assert_same_pipeline(a, b) -> None:
    for part in ("unet", "vae", "text_encoder"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), part
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert type(a.scheduler) is type(b.scheduler) and public(a.scheduler.config) == public(b.scheduler.config)
    prompt = ["a close-up cropped png photo of a bottle with a crack"]
    assert a.tokenizer(prompt, padding="max_length").input_ids == b.tokenizer(prompt, padding="max_length").input_ids
    # a small UNet forward: same numbers end to end
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 9, 16, 16, generator=g), torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        assert torch.equal(a.unet(x, 10, ctx).sample, b.unet(x, 10, ctx).sample)


def test_pipeline_from_local_folder_and_env(tiny_pipe, saved_pipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_inpaint_pipeline(saved_pipe)
    _assert_same_pipeline(loaded, tiny_pipe)
    info = model_info(loaded)
    assert (info["source"], info["weights"], info["name"], info["seed"]) == ("local", "pretrained", str(saved_pipe), None)
    assert model_info(loaded.unet)["kind"] == "unet"
    assert loaded.safety_checker is None
    assert info["scheduler"] == "DDIMScheduler"
    monkeypatch.setenv("CFVIZ_SD_INPAINT", str(saved_pipe))
    assert model_info(load_inpaint_pipeline())["name"] == str(saved_pipe)


def test_pipeline_scheduler_choice(saved_pipe: Path) -> None:
    import json

    from diffusers import PNDMScheduler

    # a checkpoint that ships PNDM (as SD2-inpainting does) is switched to DDIM by default
    pndm = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                         steps_offset=1, set_alpha_to_one=False)
    folder = saved_pipe.parent / "pndm"
    shutil.copytree(saved_pipe, folder)
    pndm.save_pretrained(folder / "scheduler")
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "PNDMScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    ddim = load_inpaint_pipeline(folder).scheduler
    assert type(ddim).__name__ == "DDIMScheduler"
    assert (ddim.config.beta_end, ddim.config.steps_offset, ddim.config.set_alpha_to_one) == (0.012, 1, False)
    assert ddim.config.clip_sample is False  # PNDM has no clip_sample; DDIM's default would clip latents
    assert type(load_inpaint_pipeline(folder, scheduler="checkpoint").scheduler) is PNDMScheduler
    with pytest.raises(ValueError, match="scheduler"):
        load_inpaint_pipeline(folder, scheduler="euler")


def test_pipeline_from_hub_cache_offline(saved_pipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fake_hub_repo(tmp_path, "acme/tiny-inpainting", source=saved_pipe)
    pipe = load_inpaint_pipeline("acme/tiny-inpainting", cache_dir=tmp_path)
    info = model_info(pipe)
    assert (info["source"], info["name"], info["commit"], info["revision"]) == ("hub", "acme/tiny-inpainting", COMMIT, "main")


def test_pipeline_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-model"
    _raises_fast(lambda: load_inpaint_pipeline(missing), str(missing), "model=", "CFVIZ_SD_INPAINT")
    monkeypatch.setenv("CFVIZ_SD_INPAINT", str(missing))
    _raises_fast(load_inpaint_pipeline, "from CFVIZ_SD_INPAINT")


def test_pipeline_incomplete_folder(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{}")
    _raises_fast(lambda: load_inpaint_pipeline(tmp_path), "not a complete", "unet/config.json")


def test_pipeline_offline_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _raises_fast(lambda: load_inpaint_pipeline(cache_dir=tmp_path), "stabilityai/stable-diffusion-2-inpainting",
                 "HF_HUB_OFFLINE", "CFVIZ_SD_INPAINT", "HF_HOME", str(tmp_path))


@pytest.mark.usefixtures("online")
def test_pipeline_network_blocked_not_offline(tmp_path: Path) -> None:
    _raises_fast(lambda: load_inpaint_pipeline(cache_dir=tmp_path), "cannot be reached", "huggingface.co",
                 "CFVIZ_SD_INPAINT")


@pytest.mark.usefixtures("online")
def test_pipeline_network_blocked_uses_cache(saved_pipe: Path, tmp_path: Path) -> None:
    _fake_hub_repo(tmp_path, "acme/tiny-inpainting", source=saved_pipe)
    pipe = load_inpaint_pipeline("acme/tiny-inpainting", cache_dir=tmp_path)
    assert model_info(pipe)["commit"] == COMMIT


def test_offline_flag_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    assert hub.hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert not hub.hub_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "0"


@pytest.mark.slow
def test_clip_from_hub_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole tag path with a fake hub cache: ViT-B-16-plus-240 'laion400m_e31' (random weights)."""
    from cfviz.models import random_clip

    if not _hub_repo("laion400m_e31"):
        pytest.skip("this open_clip fetches laion400m_e31 from a release URL, not the hub (older open_clip, e.g. 2.24)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    original = random_clip("ViT-B-16-plus-240", seed=1)
    snap = _fake_hub_repo(tmp_path, "timm/vit_base_patch16_plus_clip_240.laion400m_e31")
    save_clip_checkpoint(original, snap / "open_clip_model.safetensors")
    loaded = load_clip("ViT-B-16-plus-240", "laion400m_e31", cache_dir=tmp_path)
    assert torch.equal(_encode(original)[0], _encode(loaded)[0])
    info = model_info(loaded)
    assert (info["source"], info["revision"], info["commit"]) == ("hub", "laion400m_e31", COMMIT)
    assert info["hub_repo"] == "timm/vit_base_patch16_plus_clip_240.laion400m_e31"
