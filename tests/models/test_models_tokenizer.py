"""The offline transformers CLIPTokenizer equals open_clip's tokenizer (SD2 padding)."""

from __future__ import annotations

import os

import pytest
import torch

from cfviz.models import clip_tokenizer
from cfviz.models.tokenizer import vocabulary_folder

PROMPTS = [
    "a close-up cropped png photo of a bottle with a broken top",
    "a photo of a flawless metal_nut",
    "A   cropped  photo of the Capsule, with 2 scratches; and a crack.",
    "zipper with a fabric border defect (squeezed teeth)",
    "",
]


def _open_clip_ids(prompts: list[str]) -> torch.Tensor:
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()(prompts)


def test_ids_equal_open_clip() -> None:
    tok = clip_tokenizer()
    ours = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    assert ours.shape == (len(PROMPTS), 77)
    assert torch.equal(ours, _open_clip_ids(PROMPTS))
    assert (ours[:, 0] == 49406).all()
    assert ours[-1, :3].tolist() == [49406, 49407, 0]  # empty prompt: start, end, padding


def test_sd2_conventions() -> None:
    tok = clip_tokenizer()
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert (tok.pad_token, tok.pad_token_id) == ("!", 0)
    assert (tok.bos_token_id, tok.eos_token_id) == (49406, 49407)


def test_truncation_matches_open_clip() -> None:
    long = " ".join(["scratch"] * 120)
    ours = clip_tokenizer()([long], padding="max_length", max_length=77, truncation=True,
                            return_tensors="pt").input_ids
    theirs = _open_clip_ids([long])
    assert torch.equal(ours, theirs) and ours[0, -1].item() == 49407


def test_endoftext_padding_matches_open_clip_up_to_padding() -> None:
    # with the SD1-style pad token, '!' is an ordinary character again
    prompts = ["wow!! a crack!", "hello"]
    ours = clip_tokenizer(pad_token="<|endoftext|>")(prompts, padding="max_length", max_length=77,
                                                      return_tensors="pt").input_ids
    theirs = _open_clip_ids(prompts)
    real = theirs != 0
    assert torch.equal(ours[real], theirs[real])
    assert (ours[~real] == 49407).all()


def test_vocabulary_written_once_atomically(tmp_path) -> None:
    folder = vocabulary_folder(tmp_path / "bpe")
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["merges.txt", "vocab.json"]  # no temporary leftovers
    stamp = os.stat(folder / "vocab.json").st_mtime_ns
    assert vocabulary_folder(tmp_path / "bpe") == folder
    assert os.stat(folder / "vocab.json").st_mtime_ns == stamp
    tok = clip_tokenizer(cache_dir=folder)
    assert tok(["a photo"]).input_ids[0] == [49406, 320, 1125, 49407]


def test_default_cache_location_follows_env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFVIZ_CACHE_DIR", str(tmp_path))
    folder = vocabulary_folder()
    assert folder.parent == tmp_path / "clip_bpe" and (folder / "merges.txt").is_file()
