"""Capture-engine bugs of issue 10, each checked against an independent recomputation.

Rows that reorder or repeat, ``rows="auto"`` after a guided ``pipe()`` call, whole-word token
lookup, and captures exited in any order.
"""

import pytest
import torch

import cfviz
from cfviz.capture import locate_cross_attention
from cfviz.capture.processors import RecordingProcessor
from cfviz.errors import TokenNotFoundError


def _processors(unet):
    return {n: m.get_processor() for n, m in unet.named_modules() if hasattr(m, "get_processor")}


@pytest.fixture(autouse=True)
def _leave_the_shared_unet_clean(pipe):
    """Put processors back and drop hooks a failing test left behind: the pipeline is shared."""
    unet = pipe.unet
    before = _processors(unet)
    yield
    for name, proc in before.items():
        unet.get_submodule(name).set_processor(proc)
    for m in unet.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()


def _record_inputs_and_outputs(unet, layers, blocks):
    """Hooks that keep each attention layer's inputs and each block's output; returns (seen, handles)."""
    seen = {}

    def grab_inputs(name):
        def hook(module, args, kwargs):
            seen[name] = (args[0] if args else kwargs["hidden_states"], kwargs["encoder_hidden_states"])
        return hook

    def grab_output(name):
        def hook(module, args, out):
            seen[name] = out[0] if isinstance(out, tuple) else out
        return hook

    handles = [m.register_forward_pre_hook(grab_inputs(n), with_kwargs=True) for n, m in layers.items()]
    handles += [unet.get_submodule(n).register_forward_hook(grab_output(n)) for n in blocks]
    return seen, handles


# ---------------------------------------------------------------- 1. explicit rows, any order
@pytest.mark.parametrize("rows", [[1, 0], [0, 0], [1, 1, 0]])
def test_reordered_and_repeated_rows_store_the_rows_they_name(pipe, unet_inputs, rows, direct_probabilities):
    """Row i of every record is batch row rows[i], for attention and for features."""
    unet = pipe.unet
    x, emb = unet_inputs
    layers = locate_cross_attention(unet, "up_blocks.*attn2")
    blocks = ["up_blocks.1", "up_blocks.2"]
    seen, handles = _record_inputs_and_outputs(unet, layers, blocks)
    try:
        with torch.no_grad(), cfviz.capture(unet, attention="up_blocks.*attn2", features=blocks,
                                            heads="all", rows=rows, dtype=torch.float32) as cap:
            unet(x, 400, encoder_hidden_states=emb)
    finally:
        for h in handles:
            h.remove()
    assert cap.cache.steps[0].rows == tuple(rows)
    with torch.no_grad():
        for name, attn in layers.items():
            direct = direct_probabilities(attn, *seen[name])  # the whole batch, in order
            rec = cap.cache.attention[name][0]  # (rows, H, 77, h, w)
            assert rec.shape[0] == len(rows)
            for i, r in enumerate(rows):
                torch.testing.assert_close(rec[i].flatten(2).transpose(1, 2), direct[r], rtol=1e-5, atol=1e-6)
        for name in blocks:
            rec = cap.cache.features[name][0]
            assert rec.shape[0] == len(rows)
            for i, r in enumerate(rows):
                torch.testing.assert_close(rec[i], seen[name][r].float())


# ---------------------------------------------------------------- 2. rows="auto" follows the call
def _guided_pipe_call(pipe):
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pipe("a photo of a brick with damage", image=image, mask_image=torch.zeros(1, 1, 64, 64), height=64,
         width=64, num_inference_steps=1, guidance_scale=7.5, generator=torch.Generator().manual_seed(0),
         output_type="pt")
    assert pipe.do_classifier_free_guidance  # the stale flag this test is about


def test_auto_rows_keep_every_image_of_mapdiff_forward_after_a_guided_pipe_call(pipe):
    from cfviz.diffusion.forward import build_prompt, mapdiff_forward

    _guided_pipe_call(pipe)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    prompt = build_prompt("brick", "damage")
    kw = dict(attention="up_blocks.*attn2", tokens=["damage"], prompt=prompt, features=["up_blocks.1"])
    with cfviz.capture(pipe, **kw) as auto:
        mapdiff_forward(pipe, images, prompt, timesteps=[300], seed=2)
    with cfviz.capture(pipe, rows="all", **kw) as every:
        mapdiff_forward(pipe, images, prompt, timesteps=[300], seed=2)
    assert auto.cache.steps[0].rows == (0, 1) and auto.cache.batch_size == 2
    for name in auto.layers:
        assert torch.equal(auto.cache.attention[name][0], every.cache.attention[name][0])
    assert torch.equal(auto.cache.features["up_blocks.1"][0], every.cache.features["up_blocks.1"][0])


def test_auto_rows_ignore_the_stale_flag_for_direct_unet_calls(pipe, unet_inputs):
    _guided_pipe_call(pipe)
    x, emb = unet_inputs
    with torch.no_grad(), cfviz.capture(pipe, attention="up_blocks.1*") as direct:
        pipe.unet(x, 10, encoder_hidden_states=emb)
    assert direct.cache.steps[0].rows == (0, 1)  # not a pipe() call: nothing says it is guided
    with cfviz.capture(pipe.unet, attention="up_blocks.1*") as inside:  # a bare UNet, called by pipe()
        _guided_pipe_call(pipe)
    assert inside.cache.steps[0].rows == (1,)  # the guided pipe() call: its conditional half


def test_declared_guidance_decides_auto_rows(pipe, unet_inputs):
    from cfviz.capture.session import classifier_free_guidance

    x, emb = unet_inputs
    with torch.no_grad():
        with cfviz.capture(pipe, attention="up_blocks.1*") as guided, classifier_free_guidance(True):
            pipe.unet(x, 10, encoder_hidden_states=emb)
        with cfviz.capture(pipe.unet, attention="up_blocks.1*") as bare, classifier_free_guidance(True):
            pipe.unet(x, 10, encoder_hidden_states=emb)
    assert guided.cache.steps[0].rows == bare.cache.steps[0].rows == (1,)  # the caller says [uncond, cond]


# ---------------------------------------------------------------- 3. whole words only
VISA_PROMPT = "a close-up cropped png photo of a chewinggum with damage"


def test_a_word_inside_another_word_is_an_error_listing_the_words(pipe):
    with pytest.raises(TokenNotFoundError, match=r"'gum' is not in prompt .* as a whole word .*part of "
                                                 r"'chewinggum'.*words are \['a', 'close-up', .*'damage'\]"):
        cfviz.capture(pipe, tokens=["gum"], prompt=VISA_PROMPT)
    with pytest.raises(TokenNotFoundError, match="'pcb' is not in prompt"):  # CLIP splits pcb1 into pcb</w> 1</w>
        cfviz.capture(pipe, tokens=["pcb"], prompt="a photo of a pcb1 with damage")


def test_a_multi_token_word_selects_all_its_pieces(pipe, unet_inputs):
    tok = pipe.tokenizer
    ids = tok(VISA_PROMPT).input_ids
    pieces = tok("chewinggum", add_special_tokens=False).input_ids
    assert len(pieces) == 3  # che, wing, gum</w>
    start = next(i for i in range(len(ids)) if ids[i:i + 3] == pieces)
    x, _ = unet_inputs
    emb = pipe.text_encoder(torch.tensor([ids + [ids[-1]] * (77 - len(ids))]))[0].expand(2, -1, -1)
    with torch.no_grad():
        with cfviz.capture(pipe, tokens=["chewinggum", "close-up", "Damage"], prompt=VISA_PROMPT,
                           dtype=torch.float32) as sel:
            pipe.unet(x, 50, encoder_hidden_states=emb)
        with cfviz.capture(pipe, dtype=torch.float32) as full:
            pipe.unet(x, 50, encoder_hidden_states=emb)
    assert sel.cache.tokens.columns[0][0] == tuple(range(start, start + 3))
    assert sel.cache.tokens.columns[0][1] == (2, 3, 4)  # close</w> -</w> up</w>
    layer = sel.layers[0]
    s, f = sel.cache.attention[layer][0], full.cache.attention[layer][0]
    torch.testing.assert_close(s[:, 0], f[:, start:start + 3].mean(1))
    torch.testing.assert_close(s[:, 2], f[:, ids.index(tok("damage", add_special_tokens=False).input_ids[0])])


def _marker_free_tokenizer():
    """A WordPiece tokenizer with no word-end or continuation marks: "chewinggum" -> chewing, gum."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<s>", "</s>", "<pad>", "<unk>", "a", "photo", "of", "with", "damage", "chewing", "gum"]
    tk = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="<unk>",
                                    continuing_subword_prefix=""))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=16)


def test_whole_words_with_a_tokenizer_that_marks_no_word_ends():
    from cfviz.capture.tokens import select_tokens

    tok = _marker_free_tokenizer()
    prompt = "a photo of a chewinggum with damage"
    assert tok.convert_ids_to_tokens(tok(prompt).input_ids)[4:7] == ["a", "chewing", "gum"]
    sel = select_tokens(tok, prompt, ["chewinggum", "damage", "photo of"])
    assert sel.columns[0] == ((5, 6), (8,), (2, 3))
    with pytest.raises(TokenNotFoundError, match="'gum' is not in prompt"):
        select_tokens(tok, prompt, ["gum"])


def test_a_word_cut_off_by_the_length_limit_is_an_error(pipe):
    from cfviz.capture.tokens import select_tokens

    prompt = " ".join(["photo"] * 80) + " damage"
    with pytest.raises(TokenNotFoundError, match="beyond the tokenizer's limit of 77"):
        select_tokens(pipe.tokenizer, prompt, ["damage"])


# ---------------------------------------------------------------- 4. captures exited in any order
# enter 0, 1, 2 (the chain is then 2 -> 1 -> 0 -> original); exit innermost first (the bug),
# from the middle, and newest first
@pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2), (1, 2, 0), (2, 1, 0)])
def test_overlapping_captures_exited_in_any_order_restore_everything(pipe, unet_inputs, hook_count, order):
    unet = pipe.unet
    x, emb = (t[:1] for t in unet_inputs)
    before = _processors(unet)
    caps = [cfviz.capture(unet, attention="up_blocks.1*", features=["mid_block"]) for _ in range(3)]
    with torch.no_grad():
        for c in caps:
            c.__enter__()
        active = set(range(3))
        for t, i in enumerate(order):
            caps[i].__exit__(None, None, None)
            active.discard(i)
            unet(x, t, encoder_hidden_states=emb)  # recorded by the captures still active, only by them
            for j in range(3):
                assert (float(t) in caps[j].cache.timesteps) == (j in active)
    assert all(_processors(unet)[n] is p for n, p in before.items())
    assert not any(isinstance(p, RecordingProcessor) for p in _processors(unet).values())
    assert hook_count(unet) == 0
    # the last capture out recorded the calls made while it was still active, correctly
    last = caps[order[-1]]
    with torch.no_grad(), cfviz.capture(unet, attention="up_blocks.1*", features=["mid_block"]) as ref:
        unet(x, 0, encoder_hidden_states=emb)
    for name in ref.layers:
        torch.testing.assert_close(last.cache.attention[name][0], ref.cache.attention[name][0])
