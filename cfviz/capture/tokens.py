"""Token selection: which columns of a cross-attention map to keep, by word or by index.

CLIP's tokenizer splits rare words into several sub-word tokens and prepends a start token, so
the word "scratches" may occupy positions 7 and 8 of the 77-token sequence. A
:class:`TokenSelection` maps each requested label to the positions it occupies in each prompt;
the recorder averages those columns (as DAAM does for sub-tokens), so one label gives one map.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cfviz.errors import TokenNotFoundError

TokenSpec = str | int


@dataclass(frozen=True)
class TokenSelection:
    """Resolved token choice for one or more prompts.

    Attributes
    ----------
    labels:
        One label per selected token: the word as given, or ``"#<i>:<token>"`` for an index.
    prompts:
        The prompts, one per batch row kept by the capture (or a single prompt for all rows).
    token_ids:
        The full token id sequence of each prompt (start token, words, end token, padding).
    columns:
        ``columns[p][k]``: the sequence positions that label ``k`` occupies in prompt ``p``.
    sequence_length:
        Length of the tokenised sequence (the key length of cross-attention, 77 for SD).
    """

    labels: tuple[str, ...]
    prompts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    columns: tuple[tuple[tuple[int, ...], ...], ...]
    sequence_length: int

    def weights(self, device: Any = None) -> Any:
        """Averaging matrix of shape ``(P, L, K)``: ``maps = probs @ W`` keeps and merges columns."""
        import torch

        w = torch.zeros(len(self.prompts), self.sequence_length, len(self.labels), dtype=torch.float32)
        for p, cols_per_label in enumerate(self.columns):
            for k, cols in enumerate(cols_per_label):
                w[p, list(cols), k] = 1.0 / len(cols)
        return w.to(device) if device is not None else w

    def to_json(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "prompts": list(self.prompts),
                "token_ids": [list(t) for t in self.token_ids],
                "columns": [[list(c) for c in cols] for cols in self.columns],
                "sequence_length": self.sequence_length}


def _token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]


def _encode(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    if special:
        max_len = int(getattr(tokenizer, "model_max_length", 77))
        out = tokenizer(text, padding="max_length", max_length=max_len, truncation=True)
    else:  # the whole text, also past the length limit (no warning: truncation is checked here)
        out = tokenizer(text, add_special_tokens=False, verbose=False)
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return [int(i) for i in ids]


#: The text units a prompt is matched in: runs of letters and digits, runs of other visible
#: characters, underscores. A word (or phrase) matches a run of whole units, never part of one.
_UNIT = re.compile(r"[^\W_]+|[^\w\s]+|_+")


@dataclass(frozen=True)
class _Unit:
    """A text unit of a prompt and the content-token positions ``[start, end)`` it occupies.

    Units whose token boundary the tokenizer does not confirm share one group (``first``/``last``
    mark the group's ends), so a match can neither start nor end inside a group.
    """

    text: str
    start: int
    end: int
    first: bool
    last: bool


def _units(text: str) -> list[re.Match[str]]:
    return list(_UNIT.finditer(text))


def _prompt_units(tokenizer: Any, prompt: str, content: list[int]) -> list[_Unit]:
    """Map each text unit of ``prompt`` to the tokens it occupies in ``content`` (no specials).

    The tokens of unit ``i`` are those the prompt's text up to the end of unit ``i`` adds to the
    text before it. That holds for any tokenizer whose tokens of a text prefix are a prefix of the
    text's tokens (CLIP's BPE with ``</w>`` word ends, GPT-2-style, WordPiece, SentencePiece); a
    boundary where it does not hold is not a boundary (the units on both sides are grouped).
    """
    matches = _units(prompt)
    if not matches:
        return []
    out = tokenizer([prompt[:m.end()] for m in matches], add_special_tokens=False, verbose=False)
    prefix_ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    units: list[_Unit] = []
    group: list[str] = []
    start = 0
    for m, ids in zip(matches, prefix_ids):
        group.append(m.group().casefold())
        n = len(ids)
        if n > start and [int(i) for i in ids] == content[:n]:  # a confirmed token boundary
            units.extend(_Unit(t, start, n, first=k == 0, last=k == len(group) - 1) for k, t in enumerate(group))
            group, start = [], n
    if group and len(content) > start:
        units.extend(_Unit(t, start, len(content), first=k == 0, last=k == len(group) - 1)
                     for k, t in enumerate(group))
    return units


def _content_offset(ids: list[int], content: list[int]) -> int:
    """Position of the first content token in the padded sequence (1 after CLIP's start token)."""
    head = content[:4]
    for offset in range(len(ids) - len(head) + 1):
        if ids[offset:offset + len(head)] == head:
            return offset
    return 0


@dataclass(frozen=True)
class _Layout:
    """A prompt's units, where its content starts in the padded sequence, and how much of it is kept."""

    units: list[_Unit]
    offset: int  #: position of the first content token (1 after CLIP's start token)
    kept: int  #: content tokens that survive truncation to the tokenizer's length


def _layout(tokenizer: Any, prompt: str, ids: list[int]) -> _Layout:
    content = _encode(tokenizer, prompt, special=False)
    offset = _content_offset(ids, content)
    kept = 0
    while kept < len(content) and offset + kept < len(ids) and ids[offset + kept] == content[kept]:
        kept += 1
    return _Layout(_prompt_units(tokenizer, prompt, content), offset, kept)


def _word_positions(layout: _Layout, word: str) -> tuple[list[int], bool]:
    """Sequence positions of every whole-unit occurrence of ``word`` in the prompt.

    Returns ``(positions, truncated)``; ``truncated`` is True when the word occurs only after the
    tokenizer's length limit.
    """
    wanted = [m.group().casefold() for m in _units(word)]
    units, k = layout.units, len(wanted)
    hits: list[int] = []
    truncated = False
    for i in range(len(units) - k + 1):
        run = units[i:i + k]
        if not (run[0].first and run[-1].last) or [u.text for u in run] != wanted:
            continue
        if run[-1].end > layout.kept:
            truncated = True
            continue
        hits.extend(range(layout.offset + run[0].start, layout.offset + run[-1].end))
    return hits, truncated and not hits


def _prompt_words(prompt: str) -> list[str]:
    """The prompt's whitespace-separated words without surrounding punctuation (for messages).

    >>> _prompt_words("a photo of a chewinggum, with close-up damage.")
    ['a', 'photo', 'of', 'a', 'chewinggum', 'with', 'close-up', 'damage']
    """
    return [re.sub(r"^[\W_]+|[\W_]+$", "", w) or w for w in prompt.split()]


def _not_found(tokenizer: Any, word: str, prompt: str, ids: list[int], truncated: bool) -> str:
    """The message for a word that is not a whole word of ``prompt``."""
    if truncated:
        return (f"word {word!r} of prompt {prompt!r} lies beyond the tokenizer's limit of {len(ids)} "
                "tokens, so the text encoder never sees it: shorten the prompt or choose an earlier word")
    words = _prompt_words(prompt)
    inside = [w for w in words if word.casefold() in w.casefold()]
    hint = f" (it is only part of {inside[0]!r}; words match whole)" if inside else ""
    shown = _token_strings(tokenizer, ids)
    eos = getattr(tokenizer, "eos_token_id", None)
    end = next((i for i in range(1, len(ids)) if ids[i] == eos), len(shown) - 1)
    return (f"word {word!r} is not in prompt {prompt!r} as a whole word{hint}; its words are {words}. "
            "Choose one of these words (or several in a row), or pass an integer position "
            f"(0 is the start token) of its tokens {shown[:end + 1]}.")


def select_tokens(tokenizer: Any, prompts: str | Sequence[str], tokens: Sequence[TokenSpec] | None) -> TokenSelection:
    """Resolve words or indices against the tokenised prompt(s).

    Parameters
    ----------
    tokenizer:
        A Hugging Face tokenizer (``pipe.tokenizer``): callable, with ``convert_ids_to_tokens``.
    prompts:
        One prompt, or one per batch row that the capture keeps.
    tokens:
        Words (every sub-token of every occurrence is averaged) or integer positions in the token
        sequence, where position 0 is the start token (so the first word is at 1). A word matches
        whole words of the prompt only, case-insensitively: ``"gum"`` does not select the last
        piece of ``"chewinggum"``; a phrase (``"metal nut"``) matches consecutive words. ``None`` keeps
        every position of the sequence (77 maps per layer: large).

    Raises
    ------
    TokenNotFoundError
        A word is not a whole word of a prompt; the message lists that prompt's words and tokens.

    Example
    -------
    >>> from cfviz.models import clip_tokenizer  # doctest: +SKIP
    >>> sel = select_tokens(clip_tokenizer(), "a photo of a bottle with damage", ["damage"])  # doctest: +SKIP
    >>> sel.columns[0][0]  # doctest: +SKIP
    (7,)
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise TokenNotFoundError("prompts is empty: pass the prompt(s) given to the text encoder")
    id_lists = [_encode(tokenizer, p, special=True) for p in prompt_list]
    length = len(id_lists[0])
    if tokens is None:
        labels = tuple(f"#{i}:{t}" for i, t in enumerate(_token_strings(tokenizer, id_lists[0])))
        columns = tuple(tuple((i,) for i in range(length)) for _ in prompt_list)
        return TokenSelection(labels, tuple(prompt_list), tuple(tuple(i) for i in id_lists), columns, length)
    if isinstance(tokens, (str, int)):
        tokens = [tokens]
    labels: list[str] = []
    per_prompt: list[list[tuple[int, ...]]] = [[] for _ in prompt_list]
    layouts: dict[str, _Layout] = {}
    for spec in tokens:
        if isinstance(spec, bool) or not isinstance(spec, (str, int)):
            raise TypeError(f"tokens must hold words (str) or positions (int), got {spec!r}")
        if isinstance(spec, int):
            if not 0 <= spec < length:
                raise TokenNotFoundError(f"token position {spec} is outside the sequence of length {length}")
            labels.append(f"#{spec}:{_token_strings(tokenizer, [id_lists[0][spec]])[0]}")
            for cols in per_prompt:
                cols.append((spec,))
            continue
        if not _units(spec):
            raise TokenNotFoundError(f"token word {spec!r} is empty: pass a word of the prompt or an integer position")
        labels.append(spec)
        for p, ids in enumerate(id_lists):
            prompt = prompt_list[p]
            if prompt not in layouts:  # a batch often repeats one prompt: lay each out once
                layouts[prompt] = _layout(tokenizer, prompt, ids)
            hits, truncated = _word_positions(layouts[prompt], spec)
            if not hits:
                raise TokenNotFoundError(_not_found(tokenizer, spec, prompt_list[p], ids, truncated))
            per_prompt[p].append(tuple(sorted(set(hits))))
    return TokenSelection(tuple(labels), tuple(prompt_list), tuple(tuple(i) for i in id_lists),
                          tuple(tuple(c) for c in per_prompt), length)
