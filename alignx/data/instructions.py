"""Instruction formatting (the Alpaca template) and tokenisation with exact source/target spans.

Stage 1 trains on translation instructions, stage 2 on translation plus general instructions; both,
and the evaluation's in-prompt encoding, go through ``encode_example`` so the spans mean the same
thing everywhere. The text is always tokenised whole; a span is every token holding a character of
its sentence, and "exact" (checked on a sample of every encoding call) is defined in
``alignx.data.spans``. This module also builds the translation instruction rows from the parallel
shards; general instructions come from ``alignx.data.general_instructions``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from alignx.data.schema import INSTRUCTION_SCHEMA, normalise_text
from alignx.data.spans import SpanMismatchError, check_span, decode_span, token_spans
from alignx.languages import get_language

log = logging.getLogger(__name__)

PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
# Alpaca's variant for instructions without an input (general instructions only).
PROMPT_TEMPLATE_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def translation_instruction(src_lang: str, tgt_lang: str) -> str:
    """The instruction of a translation example, e.g. 'Translate the following sentence from German to English.'"""
    src, tgt = get_language(src_lang).name, get_language(tgt_lang).name
    return f"Translate the following sentence from {src} to {tgt}."


@dataclass(frozen=True)
class EncodedExample:
    """One tokenised example.

    ``prompt_len`` tokens precede the response (they are masked from L_lm when the prompt is masked).
    Spans are token positions ``[start, end)`` in ``input_ids``: ``src_span`` covers the input text,
    ``tgt_span`` the response without its final EOS. A span that the length limit cut (even in part)
    is ``None``.
    """

    input_ids: list[int]
    prompt_len: int
    src_span: tuple[int, int] | None
    tgt_span: tuple[int, int] | None

    def labels(self, mask_prompt: bool) -> list[int]:
        """Targets for L_lm: the tokens themselves, with the prompt set to -100 when masked."""
        if not mask_prompt:
            return list(self.input_ids)
        cut = min(self.prompt_len, len(self.input_ids))
        return [-100] * cut + list(self.input_ids[cut:])


def _segments(instruction: str, input_text: str, output_text: str | None) -> list[str]:
    """The prompt split at the span boundaries: [before input, input, before response, response]."""
    if input_text:
        head, tail = PROMPT_TEMPLATE.split("{input}")
        before = head.format(instruction=instruction)
        return [before, input_text, tail, output_text or ""]
    return [PROMPT_TEMPLATE_NO_INPUT.format(instruction=instruction), "", "", output_text or ""]


def encode_example(
    tokenizer,
    instruction: str,
    input_text: str,
    output_text: str | None,
    max_length: int,
    add_eos: bool = True,
) -> EncodedExample:
    """Tokenise one instruction example in the Alpaca template and locate its spans.

    The whole text is tokenised at once (the tokenisation a model sees in context) and spans come
    from the tokenizer's character offsets (``alignx.data.spans``): a token that crosses a span
    boundary (e.g. a final '.' merged with the template's newlines) belongs to the span. BOS (and
    other leading special tokens) follow the tokenizer's default; EOS is appended after a response
    when ``add_eos``. Truncation keeps the first ``max_length`` tokens. The spans are checked
    (``check_encoded``); a span that does not decode exactly raises ``SpanMismatchError``.
    """
    return encode_examples(tokenizer, [(instruction, input_text, output_text)], max_length, add_eos)[0]


def encode_examples(
    tokenizer,
    rows: Sequence[tuple[str, str, str | None]],
    max_length: int,
    add_eos: bool = True,
    check_sample: int = 64,
) -> list[EncodedExample]:
    """Batched ``encode_example`` over (instruction, input, output) rows (one tokenizer call).

    ``check_sample`` examples, evenly spaced over ``rows``, are checked with ``check_encoded``
    (0: none); a mismatch raises ``SpanMismatchError`` showing the example.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"span encoding needs a fast tokenizer (one that returns character offsets); "
                        f"{type(tokenizer).__name__} of {getattr(tokenizer, 'name_or_path', '?')!r} is not one")
    segs = [_segments(ins, inp, out) for ins, inp, out in rows]
    enc = tokenizer(["".join(s) for s in segs], add_special_tokens=True, return_special_tokens_mask=True,
                    return_offsets_mapping=True)
    eos = tokenizer.eos_token_id
    out = []
    for i, (_, _, response) in enumerate(rows):
        ids, special = enc["input_ids"][i], enc["special_tokens_mask"][i]
        lead = 0
        while lead < len(ids) and special[lead]:
            lead += 1
        trail = len(ids)
        while trail > lead and special[trail - 1]:
            trail -= 1  # a default trailing EOS is dropped: we place EOS ourselves, after responses only
        before, inp, tail, resp = (len(s) for s in segs[i])
        src, tgt = token_spans(enc["offset_mapping"][i][lead:trail],
                               [(before, before + inp), (before + inp + tail, before + inp + tail + resp)])
        full = list(ids[:trail])
        if response is not None and add_eos and eos is not None:
            full.append(eos)
        prompt_len = lead + tgt[0] if tgt is not None else trail
        src = (lead + src[0], lead + src[1]) if src is not None else None
        tgt = (lead + tgt[0], lead + tgt[1]) if tgt is not None else None
        full = full[:max_length]
        src = src if src is not None and src[1] <= max_length else None
        tgt = tgt if tgt is not None and tgt[1] <= max_length else None
        out.append(EncodedExample(full, min(prompt_len, len(full)), src, tgt))
    if check_sample:
        check_encoded(tokenizer, rows, out, even_sample(len(rows), check_sample))
    return out


def even_sample(n: int, k: int) -> list[int]:
    """``min(n, k)`` indices spread evenly over ``range(n)`` (a deterministic sample of every part)."""
    m = min(n, k)
    return [j * n // m for j in range(m)]


def span_problems(
    tokenizer,
    row: tuple[str, str, str | None],
    input_ids: Sequence[int],
    src_span: tuple[int, int] | None,
    tgt_span: tuple[int, int] | None,
) -> list[str]:
    """What is wrong with the spans of one encoded row ([] when each decodes exactly to its sentence).

    ``input_ids`` and the spans may be an ``EncodedExample``'s or a padded row of a batch (spans
    shifted with it). A span cut away by the length limit (None) has nothing to check.
    """
    head, inp, tail, resp = _segments(*row)
    problems = []
    if src_span is not None:
        why = check_span(tokenizer, input_ids, src_span, inp, head, tail + resp)
        if why:
            problems.append(f"source span: {why}")
    if tgt_span is not None:
        why = check_span(tokenizer, input_ids, tgt_span, resp, head + inp + tail, "")
        if why:
            problems.append(f"target span: {why}")
    return problems


def check_encoded(
    tokenizer,
    rows: Sequence[tuple[str, str, str | None]],
    encoded: Sequence[EncodedExample],
    indices: Sequence[int],
) -> None:
    """Raise ``SpanMismatchError`` when a span of the examples at ``indices`` does not decode exactly.

    The message shows the first mismatching examples: the sentence, the decoded span and its token
    ids with two tokens of context on either side.
    """
    bad = []
    for i in indices:
        e = encoded[i]
        for problem in span_problems(tokenizer, rows[i], e.input_ids, e.src_span, e.tgt_span):
            bad.append((i, problem))
    if not bad:
        return
    lines = [f"{len({i for i, _ in bad})} of {len(indices)} checked examples have a token span that does not "
             f"decode exactly to its sentence (tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__!r});"
             f" a span must decode to its sentence with at most the template characters its boundary tokens hold "
             f"(see alignx.data.spans)"]
    for i, problem in bad[:3]:
        e, (_, inp, out) = encoded[i], rows[i]
        source = problem.startswith("source")
        s, t = e.src_span if source else e.tgt_span
        lines += [f"  example {i}, {problem}",
                  f"    sentence: {(inp if source else out)!r}",
                  f"    decoded:  {decode_span(tokenizer, e.input_ids[s:t])!r}",
                  f"    token ids: {e.input_ids[max(0, s - 2):s]} [{' '.join(map(str, e.input_ids[s:t]))}] "
                  f"{e.input_ids[t:t + 2]}"]
    raise SpanMismatchError("\n".join(lines))


@dataclass(frozen=True)
class TrainExample:
    """An encoded example, the language ids of its two spans (-1 when unknown) and its pair group.

    Examples with the same ``group`` (>= 0) share a text, e.g. the two directions of one translation
    pair; the batch schedule keeps them apart, as each would be a false negative for the other.
    """

    encoded: EncodedExample
    src_lang: int = -1
    tgt_lang: int = -1
    group: int = -1


def encode_rows(
    tokenizer, rows: pd.DataFrame, max_length: int, languages: Sequence[str], chunk: int = 1024,
    check_sample: int = 64,
) -> list[TrainExample]:
    """Encode instruction rows (INSTRUCTION_SCHEMA) with language ids indexed in ``languages``.

    Translation rows that share a text (the two directions of a pair, several translations of one
    sentence) get one group; general rows have none. ``check_sample`` examples spread over all rows
    are checked (``check_encoded``): a span that does not decode exactly raises ``SpanMismatchError``.
    """
    ids = {code: i for i, code in enumerate(languages)}
    groups = shared_text_groups(rows)
    records = list(rows[["instruction", "input", "output", "src_lang", "tgt_lang"]].itertuples(index=False))
    out: list[TrainExample] = []
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        encoded = encode_examples(tokenizer, [(r[0], r[1], r[2]) for r in part], max_length, check_sample=0)
        out.extend(TrainExample(e, ids.get(r[3], -1), ids.get(r[4], -1), g)
                   for e, r, g in zip(encoded, part, groups[start : start + chunk]))
    check_encoded(tokenizer, [(r[0], r[1], r[2]) for r in records], [ex.encoded for ex in out],
                  even_sample(len(records), check_sample))
    return out


def shared_text_groups(rows: pd.DataFrame) -> list[int]:
    """Connected components of translation rows linked by a shared (normalised) text; -1 for others."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    translation = (rows["kind"] == "translation").tolist()
    keys = [(normalise_text(a), normalise_text(b)) for a, b in zip(rows["input"], rows["output"])]
    for is_translation, (a, b) in zip(translation, keys):
        if is_translation:
            parent[root(a)] = root(b)
    numbering: dict[str, int] = {}
    return [numbering.setdefault(root(a), len(numbering)) if t else -1 for t, (a, _) in zip(translation, keys)]


# ---------------------------------------------------------------- building instruction rows
def example_id(*parts: str) -> str:
    """A row's id: a hash of its normalised parts (languages and texts)."""
    key = "\x1f".join(normalise_text(p) for p in parts)
    return hashlib.blake2b(key.encode("utf-8"), digest_size=12).hexdigest()


def _translation_row(src_lang: str, tgt_lang: str, src: str, tgt: str, source: str) -> dict[str, str]:
    return {
        "example_id": example_id(src_lang, tgt_lang, src, tgt),
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "instruction": translation_instruction(src_lang, tgt_lang),
        "input": src,
        "output": tgt,
        "kind": "translation",
        "source": source,
    }


def cap_pairs_per_language(pairs: pd.DataFrame, cap: int | None, pivot: str, seed: int) -> pd.DataFrame:
    """At most ``cap`` pairs per non-pivot language (a seeded sample), in the original row order."""
    if cap is None:
        return pairs
    x_lang = pairs["src_lang"].where(pairs["src_lang"] != pivot, pairs["tgt_lang"])
    keep = []
    for _, group in pairs.groupby(x_lang, sort=True):
        keep.append(group if len(group) <= cap else group.sample(n=cap, random_state=seed))
    return pd.concat(keep).sort_index() if keep else pairs.iloc[:0]


def translation_rows(pairs: pd.DataFrame, pivot: str = "en", non_english_pairs: bool = False) -> pd.DataFrame:
    """Translation instructions from parallel pairs (PAIR_SCHEMA), in both directions.

    With ``non_english_pairs``, pairs that share the same pivot (English) sentence form a
    multi-way set, and every ordered pair of its other languages becomes an example too.
    """
    rows = []
    for r in pairs[["src_lang", "tgt_lang", "src_text", "tgt_text", "source"]].itertuples(index=False):
        rows.append(_translation_row(r.src_lang, r.tgt_lang, r.src_text, r.tgt_text, r.source))
        rows.append(_translation_row(r.tgt_lang, r.src_lang, r.tgt_text, r.src_text, r.source))
    if non_english_pairs:
        rows.extend(_multiway_rows(pairs, pivot))
    return pd.DataFrame(rows, columns=INSTRUCTION_SCHEMA.names)


def _multiway_rows(pairs: pd.DataFrame, pivot: str) -> list[dict[str, str]]:
    """X->Y examples between non-pivot languages whose pairs share one pivot sentence."""
    by_pivot: dict[str, dict[str, tuple[str, str]]] = {}
    for r in pairs[["src_lang", "tgt_lang", "src_text", "tgt_text", "source"]].itertuples(index=False):
        if r.src_lang == pivot:
            pivot_text, lang, text = r.src_text, r.tgt_lang, r.tgt_text
        elif r.tgt_lang == pivot:
            pivot_text, lang, text = r.tgt_text, r.src_lang, r.src_text
        else:
            continue
        by_pivot.setdefault(normalise_text(pivot_text), {}).setdefault(lang, (text, r.source))
    rows = []
    for group in by_pivot.values():
        for a, (text_a, source) in group.items():
            for b, (text_b, _) in group.items():
                if a != b:
                    rows.append(_translation_row(a, b, text_a, text_b, source))
    return rows
