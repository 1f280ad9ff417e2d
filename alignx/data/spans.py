"""Token spans of sentences inside a tokenised text, and the check that a span decodes exactly.

A sentence occupies characters ``[a, b)`` of a text that is tokenised whole (the tokenisation a model
sees in context). Its span is every token holding at least one of those characters, by the fast
tokenizer's character offsets: from the first token ending after ``a`` to the last token starting
before ``b``. A token that straddles a boundary (byte-level BPE merges a final ``.`` with the
template's ``\\n\\n`` into one token in Llama 3 and Qwen3) is inside the span: its state carries the
sentence's last characters.

"Exactly" means, for the span's tokens decoded alone
(``tokenizer.decode(ids[s:e], skip_special_tokens=False, clean_up_tokenization_spaces=False)``):

1. the decoded text is ``p + sentence + q``, where ``p`` is a suffix of the text before the sentence
   and ``q`` a prefix of the text after it: the only extra characters are template characters that
   the boundary tokens hold (``q`` is ``"\\n\\n"`` where ``.\\n\\n`` is one token; usually both are
   empty);
2. the span is minimal: when ``p`` (``q``) is not empty, the first (last) token does not decode to
   template characters alone, so each boundary token holds at least one of the sentence's characters;
3. special tokens are text like any other here (nothing is skipped), so a span holding Gemma's
   ``<bos>``, an EOS or padding decodes with that token's text and fails rule 1: leading special
   tokens (BOS) and the appended EOS are never part of a span;
4. spaces are characters: a sentence's inner spaces must come back as they are (SentencePiece's
   ``▁`` and byte-level's ``Ġ`` decode to a space). The one allowance: when the first token's piece
   starts with ``▁``, a decoder that strips the leading space of a decoded text (Llama 2 style) may
   drop that one space, so the comparison restores it first;
5. the tokenizer's own Unicode normalisation applies (Qwen3 normalises to NFC, so a Bengali 'য়'
   written as the one code point U+09DF comes back as U+09AF U+09BC): sentence and template are
   compared in that form, which is the text the model sees. Nothing else is normalised (no cleanup
   of spaces before punctuation, no stripping): a byte-level token cut inside a multi-byte
   character decodes to U+FFFD and fails.
"""

from __future__ import annotations

import json
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

SPACE_MARK = "\u2581"  # SentencePiece's '▁'


class SpanMismatchError(ValueError):
    """Encoded spans that do not decode exactly to their sentences (see this module's docstring)."""


def token_spans(
    offsets: Sequence[tuple[int, int]], ranges: Sequence[tuple[int, int]]
) -> list[tuple[int, int] | None]:
    """Token range ``[i, j)`` of the tokens holding characters ``[a, b)``, for each range (None: no token).

    ``offsets`` are the tokens' character offsets in the text, in order (non-decreasing).
    """
    starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
    out: list[tuple[int, int] | None] = []
    for a, b in ranges:
        i = bisect_right(ends, a)  # the first token ending after a
        j = bisect_left(starts, b) if b > a else i  # the tokens starting before b
        out.append((i, j) if i < j else None)
    return out


def decode_span(tokenizer, ids: Sequence[int]) -> str:
    """The text of ``ids`` decoded alone, with nothing skipped or cleaned up (rule 5)."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def unicode_form(tokenizer) -> str | None:
    """The Unicode normal form (NFC, NFD, NFKC, NFKD) the tokenizer's normalizer applies, if any."""
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    if normalizer is None:
        return None
    stack = [json.loads(normalizer.__getstate__())]
    while stack:
        node = stack.pop()
        if node.get("type") in ("NFC", "NFD", "NFKC", "NFKD"):
            return node["type"]
        stack.extend(node.get("normalizers") or [])
    return None


def _extras(decoded: str, sentence: str, before: str, after: str) -> tuple[str, str] | None:
    """(p, q) with decoded == p + sentence + q, p a suffix of ``before``, q a prefix of ``after``."""
    at = decoded.find(sentence)
    while at >= 0:
        p, q = decoded[:at], decoded[at + len(sentence):]
        if before.endswith(p) and after.startswith(q):
            return p, q
        at = decoded.find(sentence, at + 1)
    return None


def check_span(
    tokenizer, input_ids: Sequence[int], span: tuple[int, int], sentence: str, before: str = "", after: str = ""
) -> str | None:
    """None when ``input_ids[span]`` decodes exactly to ``sentence`` (this module's definition), else why not.

    ``before`` and ``after`` are the encoded text's characters around the sentence: the template
    characters a boundary token may hold.
    """
    start, end = span
    if not 0 <= start < end <= len(input_ids):
        return f"span [{start}, {end}) is not a non-empty range of the {len(input_ids)} tokens"
    ids = [int(t) for t in input_ids[start:end]]
    decoded = decode_span(tokenizer, ids)
    found = _extras(decoded, sentence, before, after)
    if found is None and (form := unicode_form(tokenizer)):  # rule 5: the text the model sees
        sentence, before, after = (unicodedata.normalize(form, t) for t in (sentence, before, after))
        found = _extras(decoded, sentence, before, after)
    if found is None and not decoded.startswith(" "):
        first = tokenizer.convert_ids_to_tokens(ids[0])
        if isinstance(first, str) and first.startswith(SPACE_MARK):  # rule 4: a stripped leading '▁'
            found = _extras(" " + decoded, sentence, before, after)
    if found is None:
        return (f"span [{start}, {end}) decodes to {decoded!r}, which is not the sentence with at most "
                f"template characters around it (before: ...{before[-12:]!r}, after: {after[:12]!r}...)")
    p, q = found  # rule 2: a boundary token made of template characters alone lies inside p or q
    if p and p.startswith(decode_span(tokenizer, ids[:1])):
        return f"span [{start}, {end}) starts with a token holding only template characters ({p!r} before the sentence)"
    if q and q.endswith(decode_span(tokenizer, ids[-1:])):
        return f"span [{start}, {end}) ends with a token holding only template characters ({q!r} after the sentence)"
    return None
