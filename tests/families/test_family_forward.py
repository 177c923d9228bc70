"""Real-image forwards per family (issue 14): encode, noise at chosen levels (flow matching: sigma),
one denoiser call each under capture, inpainting inputs where the model takes them."""

import pytest
import torch

import cfviz.capture
from cfviz.diffusion.families import family_forward
from cfviz.diffusion.forward import mapdiff_forward, noise_seed
from cfviz.errors import CfvizError

PROMPT = "a photo of a bottle with damage"
NAMES = ["sd1", "sdxl", "sdxl-inpaint", "sd3", "flux", "flux-fill", "pixart"]


@pytest.fixture(scope="module")
def pipes():
    from cfviz.models.families import tiny_family_pipeline

    return {}, tiny_family_pipeline


def _pipe(pipes, name):
    cache, build = pipes
    if name not in cache:
        cache[name] = build(name, seed=0)
    return cache[name]


def _images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


def _denoiser(pipe):
    from cfviz.capture.families import denoiser_of

    return denoiser_of(pipe)[0]


def _latents(pipe, images):
    vae = pipe.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    with torch.no_grad():
        return (vae.encode(images).latent_dist.mean - shift) * vae.config.scaling_factor


def _noise(latents, t):
    g = torch.Generator().manual_seed(noise_seed(0, t))
    return torch.randn(latents.shape[1:], generator=g).expand_as(latents)


@pytest.mark.parametrize("name", NAMES)
def test_one_call_per_level_with_the_noised_latents_under_capture(pipes, name):
    pipe = _pipe(pipes, name)
    den = _denoiser(pipe)
    images = _images()
    seen = []
    handle = den.register_forward_pre_hook(
        lambda _m, a, kw: seen.append(kw.get("hidden_states", kw.get("sample", a[0] if a else None))), with_kwargs=True)
    try:
        with cfviz.capture(pipe, tokens=["damage"], prompt=PROMPT) as cap:
            outs = family_forward(pipe, images, PROMPT, timesteps=[100, 400])
    finally:
        handle.remove()
    assert len(outs) == len(seen) == 2 and len(cap.cache.steps) == 2
    assert all(s.rows == (0, 1) for s in cap.cache.steps)  # unguided: every image kept
    z0 = _latents(pipe, images)
    for t, x in zip([100, 400], seen):
        noise = _noise(z0, t)
        if name.startswith(("sd3", "flux")):  # flow matching: (1 - sigma) z0 + sigma noise
            s = t / 1000
            expected = (1 - s) * z0 + s * noise
        else:
            expected = pipe.scheduler.add_noise(z0, noise, torch.tensor([t]))
        if name.startswith("flux"):  # packed 2x2: (B, h/2*w/2, 4C), Fill appends its conditioning
            b, c, h, w = expected.shape
            expected = expected.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, 4 * c)
            x = x[..., : expected.shape[-1]]
        else:
            x = x[:, : expected.shape[1]]
        torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)
    expected_t = [100.0, 400.0]  # every family on the 0..1000 scale (FLUX: its sigma * 1000)
    assert cap.cache.timesteps == pytest.approx(expected_t)
    assert cap.cache.attention_maps(tokens="damage", size=8).dims == ("step", "layer", "batch", "token", "h", "w")


@pytest.mark.parametrize("name", ["sd3", "flux-fill", "sdxl-inpaint"])
def test_each_level_is_independent_of_the_others(pipes, name):
    pipe = _pipe(pipes, name)
    both = family_forward(pipe, _images(), PROMPT, timesteps=[100, 400])
    alone = family_forward(pipe, _images(), PROMPT, timesteps=[400])
    assert torch.equal(both[1], alone[0])


@pytest.mark.parametrize("name", ["sdxl-inpaint", "flux-fill"])
def test_inpainting_inputs_follow_the_mask(pipes, name):
    pipe = _pipe(pipes, name)
    den = _denoiser(pipe)
    seen = []
    handle = den.register_forward_pre_hook(
        lambda _m, a, kw: seen.append(kw.get("hidden_states", kw.get("sample", a[0] if a else None))), with_kwargs=True)
    try:
        for mask in (None, "full"):
            family_forward(pipe, _images(), PROMPT, timesteps=[100], mask=mask)
    finally:
        handle.remove()
    none, full = seen
    if name == "sdxl-inpaint":  # [z_t (4), mask (1), masked-image latents (4)]
        assert none.shape[1] == 9
        assert float(none[:, 4].max()) == 0.0 and float(full[:, 4].min()) == 1.0
    else:  # FLUX Fill: [z (64), masked-image latents (64), packed 8x8 mask (256)]
        assert none.shape[-1] == 384
        assert float(none[..., 128:].max()) == 0.0 and float(full[..., 128:].min()) == 1.0
        assert not torch.equal(none[..., 64:128], full[..., 64:128])  # the masked image is blanked


def test_mask_is_refused_where_the_model_takes_none(pipes):
    with pytest.raises(CfvizError, match="takes no inpainting inputs"):
        family_forward(_pipe(pipes, "sd3"), _images(), PROMPT, timesteps=[100], mask="full")
    with pytest.raises(CfvizError, match="outside"):
        family_forward(_pipe(pipes, "flux"), _images(), PROMPT, timesteps=[1000])


@pytest.mark.parametrize("name", ["sd1", "flux"])
def test_mapdiff_forward_serves_every_family(pipes, name):
    pipe = _pipe(pipes, name)
    a = mapdiff_forward(pipe, _images(), PROMPT, timesteps=[261])
    b = family_forward(pipe, _images(), PROMPT, timesteps=[261])
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("name,guided", [("sd3", True), ("pixart", True), ("flux", False)])
def test_rows_auto_follows_each_family_pipeline_call(pipes, name, guided):
    """pipe() of SD3 and PixArt (guidance in a local variable) doubles the batch: the conditional half is kept."""
    pipe = _pipe(pipes, name)
    kw = {"num_inference_steps": 1, "height": 32, "width": 32, "output_type": "latent"}
    if guided:
        kw["guidance_scale"] = 5.0
    if name == "pixart":
        kw["use_resolution_binning"] = False
    with cfviz.capture(pipe, tokens=["damage"], prompt=PROMPT) as cap:
        pipe(PROMPT, **kw)
    step = cap.cache.steps[0]
    assert (step.batch_size, step.rows) == ((2, (1,)) if guided else (1, (0,)))
