"""FLORES translation with the stage-1 prompt: corpus BLEU and chrF++, per-segment chrF++, off-target rate.

The prompt is the one stage 1 trains on (``alignx.data.instructions``), so a model is asked to
translate exactly as it was taught. The off-target rate is the share of outputs whose top-1 fastText
label is not the target language (empty outputs count as off target); it is not reported for a
language the LID model cannot identify.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

from alignx.data.instructions import encode_examples, translation_instruction
from alignx.eval.generation import GreedyGenerator
from alignx.languages import get_language

# sacrebleu's tokenizer per target language: whitespace-free scripts are split into characters
# (ja-mecab would need MeCab); zh has its own tokenizer; everything else uses the default 13a.
_BLEU_TOKENIZE = {"zh": "zh", "ja": "char", "th": "char"}


@dataclass(frozen=True)
class TranslationResult:
    """Corpus metrics and per-segment rows of one direction."""

    metrics: dict[str, float | None]
    items: list[dict[str, Any]]


def translation_prompts(tokenizer, src_lang: str, tgt_lang: str, sentences: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of the stage-1 translation prompt (no response) for each source sentence."""
    instruction = translation_instruction(src_lang, tgt_lang)
    encoded = encode_examples(tokenizer, [(instruction, s, None) for s in sentences], max_length, add_eos=False)
    return [e.input_ids for e in encoded]


def translate(
    generator: GreedyGenerator,
    src_lang: str,
    tgt_lang: str,
    sentences: Sequence[str],
    until: Sequence[str] = ("\n",),
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy translations (the response up to the first stop string, stripped)."""
    prompts = translation_prompts(generator.tokenizer, src_lang, tgt_lang, sentences, generator.max_length)
    return [h.strip() for h in generator.generate(prompts, until, progress)]


def score_translations(
    hypotheses: Sequence[str],
    references: Sequence[str],
    tgt_lang: str,
    top_label: Callable[[str], str] | None,
) -> TranslationResult:
    """BLEU and chrF++ over the corpus, chrF++ per segment, and the off-target rate.

    ``top_label`` maps a text to its top-1 language label (e.g. ``LanguageIdentifier.predict``);
    None means the target language has no usable LID, so no off-target rate.
    """
    bleu = BLEU(tokenize=_BLEU_TOKENIZE.get(tgt_lang, "13a"))
    chrf = CHRF(word_order=2)
    labels = set(get_language(tgt_lang).labels)
    items = []
    for i, (hyp, ref) in enumerate(zip(hypotheses, references, strict=True)):
        row: dict[str, Any] = {"doc_id": i, "reference": ref, "hypothesis": hyp,
                               "chrf_seg": chrf.sentence_score(hyp, [ref]).score}
        if top_label is not None:
            label = top_label(hyp) if hyp.strip() else ""
            row["lid"] = label
            row["off_target"] = int(label not in labels)
        items.append(row)
    n = len(items)
    metrics: dict[str, float | None] = {
        "bleu": bleu.corpus_score(list(hypotheses), [list(references)]).score,
        "chrf": chrf.corpus_score(list(hypotheses), [list(references)]).score,
        "chrf_seg": sum(r["chrf_seg"] for r in items) / n if n else 0.0,
        "off_target": sum(r["off_target"] for r in items) / n if top_label is not None and n else None,
    }
    return TranslationResult(metrics, items)
