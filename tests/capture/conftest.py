import pytest
import torch


@pytest.fixture(scope="session")
def pipe():
    from cfviz.models.diffusion import tiny_inpaint_pipeline

    return tiny_inpaint_pipeline(seed=0)


@pytest.fixture()
def unet_inputs(pipe):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 16, 24, generator=g)
    emb = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=g)
    return x, emb


@pytest.fixture()
def hook_count():
    """Number of forward (pre-)hooks registered anywhere in a module."""
    def count(module: torch.nn.Module) -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
    return count


def _direct_probabilities(attn, hidden_states, encoder_hidden_states):
    """softmax(Q K^T * scale) of one attention layer from its own inputs: (batch, heads, queries, keys)."""
    q = attn.to_q(hidden_states)
    k = attn.to_k(encoder_hidden_states)
    b, n, _ = q.shape
    d = k.shape[-1] // attn.heads
    q = q.view(b, n, attn.heads, d).transpose(1, 2)
    k = k.view(b, -1, attn.heads, d).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)


def _capture_with_layer_inputs(unet, x, emb):
    """Capture one UNet call (every head, float32) and keep each cross-attention layer's own inputs.

    Returns ``(capture, layers, inputs)``: ``inputs[name] = (hidden_states, encoder_hidden_states)``
    as that layer received them, for :func:`_direct_probabilities`.
    """
    import cfviz
    from cfviz.capture.session import locate_cross_attention

    layers = locate_cross_attention(unet)
    seen = {}

    def grab(name):
        def hook(module, args, kwargs):
            seen[name] = (args[0] if args else kwargs["hidden_states"], kwargs["encoder_hidden_states"])
        return hook

    handles = [m.register_forward_pre_hook(grab(n), with_kwargs=True) for n, m in layers.items()]
    try:
        with torch.no_grad(), cfviz.capture(unet, heads="all", dtype=torch.float32) as cap:
            unet(x, 400, encoder_hidden_states=emb)
    finally:
        for h in handles:
            h.remove()
    assert set(seen) == set(layers) and len(layers) >= 4
    return cap, layers, seen


@pytest.fixture()
def capture_with_layer_inputs():
    """:func:`_capture_with_layer_inputs`: a captured UNet call and each layer's own inputs."""
    return _capture_with_layer_inputs


def _capture_before_and_after_swap(unet, x, emb, processor):
    """Capture one UNet call with its own processors, then with ``processor`` on every cross-attention
    layer (restored in ``finally``): ``(reference capture, swapped capture)``."""
    import cfviz

    with torch.no_grad(), cfviz.capture(unet, dtype=torch.float32) as ref:
        unet(x, 400, encoder_hidden_states=emb)
    originals = dict(unet.attn_processors)
    unet.set_attn_processor({n: (processor if n.endswith("attn2.processor") else p) for n, p in originals.items()})
    try:
        with torch.no_grad(), cfviz.capture(unet, dtype=torch.float32) as cap:
            unet(x, 400, encoder_hidden_states=emb)
    finally:
        unet.set_attn_processor(originals)
    return ref, cap


@pytest.fixture()
def capture_before_and_after_swap():
    """:func:`_capture_before_and_after_swap`: captures of a UNet call with its own and another cross-attention processor."""
    return _capture_before_and_after_swap


@pytest.fixture()
def direct_probabilities():
    """The independent recomputation the recorded maps are checked against."""
    return _direct_probabilities
