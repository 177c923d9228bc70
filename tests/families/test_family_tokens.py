"""Token labels per family (issue 14): CLIP for SD, CLIP + T5 for SD3 (a word may be in either
stream, labelled with where it was found), T5 for FLUX and PixArt; multi-token words averaged."""

import pytest
import torch

import cfviz.capture
from cfviz.errors import CaptureError, TokenNotFoundError
from cfviz.models.families import denoiser_inputs, tiny_t5_tokenizer
from cfviz.models.tokenizer import clip_tokenizer

PROMPT = "a photo of a bottle with damage and a dent"


def _all_and_chosen(model, kw, tokenizer, tokens):
    with torch.no_grad():
        with cfviz.capture(model, dtype=torch.float32) as every:
            model(**kw)
        with cfviz.capture(model, dtype=torch.float32, tokens=tokens, prompt=PROMPT, tokenizer=tokenizer) as chosen:
            model(**kw)
    return every.cache, chosen.cache


def test_sd3_word_is_found_in_both_streams_and_labelled(tiny_models):
    model = tiny_models["sd3"]
    kw = denoiser_inputs("sd3", model, text_length=77 + 16)
    toks = {"clip": clip_tokenizer(), "t5": tiny_t5_tokenizer()}
    every, chosen = _all_and_chosen(model, kw, toks, ["damage", "t5:damage", "clip:damage", "dent"])
    sel = chosen.tokens
    assert sel.labels == ("damage", "t5:damage", "clip:damage", "dent")
    assert sel.streams == (("clip", "t5"), ("t5",), ("clip",), ("clip", "t5"))
    # CLIP: start token, a photo of a bottle with damage -> 7; T5 (no start token): 6, after 77 CLIP positions
    assert sel.columns[0][0] == (7, 77 + 6) and sel.columns[0][1] == (77 + 6,) and sel.columns[0][2] == (7,)
    t5_dent = tuple(77 + i for i in range(9, 14))  # "dent" is spelled out by the tiny T5: 5 tokens
    assert set(t5_dent) <= set(sel.columns[0][3]) and len(sel.columns[0][3]) == 5 + 1
    for name in every.layers:
        full = every.attention[name][0]  # (B, 93, h, w): every text position
        got = chosen.attention[name][0]
        for k, cols in enumerate(sel.columns[0]):
            torch.testing.assert_close(got[:, k], full[:, list(cols)].mean(1), rtol=1e-5, atol=1e-6)
    assert chosen.settings["family"] == "sd3" and chosen.tokens.to_json()["streams"][0] == ["clip", "t5"]


@pytest.mark.parametrize("case", ["flux", "pixart"])
def test_t5_families_label_t5_tokens(tiny_models, case):
    model = tiny_models[case]
    kw = denoiser_inputs(case, model, text_length=16)
    every, chosen = _all_and_chosen(model, kw, tiny_t5_tokenizer(), ["damage", 2])
    sel = chosen.tokens
    assert sel.labels == ("damage", "#2:▁of") and sel.streams == (("t5",), ("t5",))
    assert sel.columns[0] == ((6,), (2,))
    for name in every.layers:
        torch.testing.assert_close(chosen.attention[name][0][:, 0], every.attention[name][0][:, 6])


def test_every_position_is_labelled_with_its_stream(tiny_models):
    model = tiny_models["sd3"]
    kw = denoiser_inputs("sd3", model, text_length=77 + 16)
    with torch.no_grad(), cfviz.capture(model, tokens=None, prompt="a photo",
                                        tokenizer={"clip": clip_tokenizer(), "t5": tiny_t5_tokenizer()}) as cap:
        model(**kw)
    sel = cap.cache.tokens
    assert len(sel.labels) == 93 and sel.streams[0] == ("clip",) and sel.streams[77] == ("t5",)
    assert sel.labels[0] == "#0:<|startoftext|>" and sel.labels[77] == "#77:▁a"


def test_t5_padded_to_the_pipeline_length(tiny_models):
    """FLUX/SD3 pipelines pad T5 to max_sequence_length: chosen words still map; 'every position' must match."""
    model = tiny_models["flux"]
    kw = denoiser_inputs("flux", model, text_length=24)  # tokenizer pads to 16, the call has 24
    with torch.no_grad(), cfviz.capture(model, tokens=["damage"], prompt=PROMPT, tokenizer=tiny_t5_tokenizer()) as cap:
        model(**kw)
    assert cap.cache.attention[cap.layers[0]][0].shape[1] == 1
    with pytest.raises(CaptureError, match="tokenised to 16 tokens but the layer attends to 24"):
        with torch.no_grad(), cfviz.capture(model, tokens=None, prompt=PROMPT, tokenizer=tiny_t5_tokenizer()):
            model(**kw)


def test_token_errors_name_the_streams_and_the_fix(tiny_models):
    model = tiny_models["sd3"]
    toks = {"clip": clip_tokenizer(), "t5": tiny_t5_tokenizer()}
    with pytest.raises(TokenNotFoundError, match=r"looked in text streams \['clip', 't5'\]"):
        cfviz.capture(model, tokens=["scratch"], prompt=PROMPT, tokenizer=toks)
    with pytest.raises(CaptureError, match="several text streams"):
        cfviz.capture(model, tokens=["damage"], prompt=PROMPT, tokenizer=clip_tokenizer())
    with pytest.raises(CaptureError, match="not text streams of a sd3"):
        cfviz.capture(model, tokens=["damage"], prompt=PROMPT, tokenizer={"t5": toks["t5"], "umt5": toks["t5"]})
    with pytest.raises(CaptureError, match="needs a tokenizer"):
        cfviz.capture(model, tokens=["damage"], prompt=PROMPT)


def test_stream_labels_survive_selecting_rows(tiny_models):
    model = tiny_models["sd3"]
    kw = denoiser_inputs("sd3", model, text_length=77 + 16)
    toks = {"clip": clip_tokenizer(), "t5": tiny_t5_tokenizer()}
    with torch.no_grad(), cfviz.capture(model, tokens=["damage"], prompt=[PROMPT, "damage"], tokenizer=toks) as cap:
        model(**kw)
    one = cap.cache.select_rows(1)
    assert one.tokens.streams == (("clip", "t5"),) and one.tokens.prompts == ("damage",)
    assert one.tokens.columns[0][0] == (1, 77)
