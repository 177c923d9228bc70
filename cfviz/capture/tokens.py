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
    streams:
        Several text streams (SD3: CLIP then T5; FLUX, PixArt: T5): for each label, the names of
        the streams it was found in. ``None`` for a single CLIP stream (SD, SDXL).
    """

    labels: tuple[str, ...]
    prompts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    columns: tuple[tuple[tuple[int, ...], ...], ...]
    sequence_length: int
    streams: tuple[tuple[str, ...], ...] | None = None

    def weights(self, device: Any = None, length: int | None = None) -> Any:
        """Averaging matrix of shape ``(P, L, K)``: ``maps = probs @ W`` keeps and merges columns.

        ``length`` is the key length of the layer when it differs from :attr:`sequence_length`
        (a T5 stream padded or cut to the pipeline's ``max_sequence_length``, which only pads or
        trims the end). A label keeps the columns inside it: a word found in several streams
        (SD3: CLIP and T5) whose T5 occurrence lies past the cut falls back to the others; a
        label with no column left, or an every-position selection of another length, is refused
        naming the limit.
        """
        import torch

        from cfviz.errors import CaptureError

        n = self.sequence_length if length is None else int(length)
        columns = self.columns
        if n != self.sequence_length:
            every = len(self.labels) == self.sequence_length and all(
                cols == tuple((i,) for i in range(self.sequence_length)) for cols in self.columns)
            if every:
                raise CaptureError(f"the prompt was tokenised to {self.sequence_length} tokens but the layer "
                                   f"attends to {n}; pass the tokenizer the text encoder uses (with its "
                                   "model_max_length), or choose tokens inside the sequence")
            columns = tuple(tuple(tuple(c for c in cols if c < n) for cols in per) for per in self.columns)
            for p, per in enumerate(columns):
                lost = [k for k, cols in enumerate(per) if not cols]
                if lost:
                    k = lost[0]
                    raise CaptureError(
                        f"token {self.labels[k]!r} lies at text position(s) {list(self.columns[p][k])} of prompt "
                        f"{self.prompts[p]!r}, past the {n} text tokens the layer attends to (the prompt was "
                        f"tokenised to {self.sequence_length}; pipelines cut T5 to their max_sequence_length): "
                        "pass a larger max_sequence_length to the pipeline, or choose a word earlier in the prompt")
        w = torch.zeros(len(self.prompts), n, len(self.labels), dtype=torch.float32)
        for p, cols_per_label in enumerate(columns):
            for k, cols in enumerate(cols_per_label):
                w[p, list(cols), k] = 1.0 / len(cols)
        return w.to(device) if device is not None else w

    def to_json(self) -> dict[str, Any]:
        out = {"labels": list(self.labels), "prompts": list(self.prompts),
               "token_ids": [list(t) for t in self.token_ids],
               "columns": [[list(c) for c in cols] for cols in self.columns],
               "sequence_length": self.sequence_length}
        if self.streams is not None:  # single-stream selections serialise as before
            out["streams"] = [list(s) for s in self.streams]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenSelection:
        """The inverse of :meth:`to_json` (stream labels included when they were written)."""
        streams = data.get("streams")
        return cls(tuple(data["labels"]), tuple(data["prompts"]), tuple(tuple(t) for t in data["token_ids"]),
                   tuple(tuple(tuple(c) for c in cols) for cols in data["columns"]), int(data["sequence_length"]),
                   streams=None if streams is None else tuple(tuple(s) for s in streams))


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


def _stream_tokenizer(stream: Any) -> Any:
    """The stream's tokenizer, padding to the stream's length when that is fixed (SD3's CLIP: 77)."""
    tok = stream.tokenizer
    if stream.length is not None and int(getattr(tok, "model_max_length", stream.length)) != stream.length:
        import copy

        tok = copy.copy(tok)
        tok.model_max_length = int(stream.length)
    return tok


def select_tokens_in_streams(streams: Sequence[Any], prompts: str | Sequence[str],
                             tokens: Sequence[TokenSpec] | None) -> TokenSelection:
    """Resolve words or positions against several text streams concatenated in the key sequence.

    ``streams`` are :class:`cfviz.capture.families.TextStream` (name, tokenizer, offset, length),
    in key order (SD3: CLIP at 0..76, then T5 from 77). A word is looked up in every stream and
    all its occurrences are averaged (the prompt goes to every text encoder); ``"<stream>:<word>"``
    (``"t5:damage"``) looks in that stream only and keeps that label. Integer positions count in
    the concatenated sequence. ``selection.streams[k]`` names the streams label ``k`` was found in.

    Raises
    ------
    TokenNotFoundError
        A word is in no stream (the message is the first stream's, naming its words and tokens).
    """
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list:
        raise TokenNotFoundError("prompts is empty: pass the prompt(s) given to the text encoder")
    names = [st.name for st in streams]
    per_stream: list[TokenSelection] = []
    offsets: list[int] = []
    toks = [_stream_tokenizer(st) for st in streams]
    for tok in toks:  # the streams follow each other in the key sequence
        offsets.append(sum(s.sequence_length for s in per_stream))
        per_stream.append(select_tokens(tok, prompt_list, None))
    total = offsets[-1] + per_stream[-1].sequence_length
    ids = tuple(tuple(i for sel in per_stream for i in sel.token_ids[p]) for p in range(len(prompt_list)))

    def position_label(pos: int) -> tuple[str, str]:
        for st, off, sel in zip(streams, offsets, per_stream):
            if off <= pos < off + sel.sequence_length:
                return f"#{pos}:{sel.labels[pos - off].split(':', 1)[1]}", st.name
        raise TokenNotFoundError(f"token position {pos} is outside the text sequence of length {total}")

    if tokens is None:
        pairs = [position_label(i) for i in range(total)]
        columns = tuple(tuple((i,) for i in range(total)) for _ in prompt_list)
        return TokenSelection(tuple(lab for lab, _ in pairs), tuple(prompt_list), ids, columns, total,
                              tuple((name,) for _, name in pairs))
    if isinstance(tokens, (str, int)):
        tokens = [tokens]
    labels: list[str] = []
    found_in: list[tuple[str, ...]] = []
    per_prompt: list[list[tuple[int, ...]]] = [[] for _ in prompt_list]
    for spec in tokens:
        if isinstance(spec, bool) or not isinstance(spec, (str, int)):
            raise TypeError(f"tokens must hold words (str) or positions (int), got {spec!r}")
        if isinstance(spec, int):
            label, name = position_label(spec)
            labels.append(label)
            found_in.append((name,))
            for cols in per_prompt:
                cols.append((spec,))
            continue
        head, sep, rest = spec.partition(":")
        only = head if sep and head in names else None
        word = rest if only else spec
        hits: list[list[int]] = [[] for _ in prompt_list]
        where: list[str] = []
        first_error: TokenNotFoundError | None = None
        for st, tok, off in zip(streams, toks, offsets):
            if only is not None and st.name != only:
                continue
            try:
                sel = select_tokens(tok, prompt_list, [word])
            except TokenNotFoundError as exc:
                first_error = first_error or exc
                continue
            for p in range(len(prompt_list)):
                hits[p].extend(off + c for c in sel.columns[p][0])
            where.append(st.name)
        if not where:
            assert first_error is not None
            raise TokenNotFoundError(f"{first_error} (looked in text streams {names if only is None else [only]})")
        labels.append(spec)
        found_in.append(tuple(where))
        for p in range(len(prompt_list)):
            per_prompt[p].append(tuple(sorted(set(hits[p]))))
    return TokenSelection(tuple(labels), tuple(prompt_list), ids, tuple(tuple(c) for c in per_prompt), total,
                          tuple(found_in))
