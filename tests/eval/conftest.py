"""Fixtures for the evaluation tests: a tiny Llama with a byte-level BPE tokenizer trained here on real
mirror sentences, saved as a checkpoint directory that ``AutoModelForCausalLM`` can load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alignx.eval.runner import evaluate_model
from alignx.profiles import parse_config

from .fixture_data import write_fixtures

TOKENIZER_LANGS = ("eng_Latn", "deu_Latn", "zho_Hans", "swh_Latn", "tha_Thai")


def build_tokenizer(mirror: Path, vocab_size: int = 700):
    """A byte-level BPE tokenizer (BOS added by default, like Llama's) trained on mirror sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = []
    for code in TOKENIZER_LANGS:
        lines += (mirror / "flores200" / f"{code}.devtest-head500").read_text(encoding="utf-8").splitlines()[:150]
    for lang in ("sw", "th", "zh"):
        lines += (mirror / "xcopa" / f"val.{lang}.jsonl").read_text(encoding="utf-8").splitlines()[:60]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_model(vocab_size: int, layers: int = 2, hidden: int = 32, seed: int = 0):
    """A tiny random Llama; a wide init makes its distributions peaked, so choices rarely tie."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def eval_fixtures(tmp_path_factory) -> Path:
    """The hand-written benchmark files of ``fixture_data``, written once per session."""
    return write_fixtures(tmp_path_factory.mktemp("eval-fixtures"))


@pytest.fixture(scope="session")
def tiny_tokenizer(mirror):
    return build_tokenizer(mirror)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    return build_model(len(tiny_tokenizer))


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, tiny_model, tiny_tokenizer) -> Path:
    """The tiny model and tokenizer saved as a checkpoint directory."""
    out = tmp_path_factory.mktemp("tiny-lm")
    tiny_model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


def eval_config(tmp: Path, fixtures: Path, **eval_overrides):
    """A seconds-scale evaluation: XCOPA, FLORES, MGSM from the mirror, XNLI and Belebele from fixtures."""
    ev = {
        "benchmarks": ["xcopa", "xnli", "belebele", "mgsm", "flores"],
        "limit": {"xcopa": 8, "flores": 4, "mgsm": 2},
        "max_new_tokens": 8, "batch_size": 8,
        "data_files": {"xnli": str(fixtures / "xnli" / "{code}.validation.jsonl"),
                       "belebele": str(fixtures / "belebele" / "{code}.jsonl")},
        "alignment": {"sets": ["flores"], "max_sentences": 16},
        "bootstrap_resamples": 200,
    }
    ev.update(eval_overrides)
    return parse_config({"name": "eval-test", "run_root": str(tmp / "run"), "languages": ["de", "zh", "sw"], "eval": ev,
                         "data": {"langid": {"cache_dir": str(tmp / "fasttext")}}})


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory, tiny_lm_dir, eval_fixtures):
    """(artefact, progress calls, config) of one evaluation of the tiny checkpoint."""
    tmp = tmp_path_factory.mktemp("eval")
    cfg = eval_config(tmp, eval_fixtures)
    calls = []
    art = evaluate_model(str(tiny_lm_dir), cfg, tmp / "out", progress=lambda d, t, desc: calls.append((d, t, desc)))
    return art, calls, cfg
