"""XCOPA log-likelihood scoring throughput: batched with shared contexts vs one request at a time.

Builds a 4-layer d192 Llama (random weights: speed does not depend on them) with a SentencePiece
tokenizer trained here on the data mirror's FLORES and XCOPA text and scores every XCOPA validation
item of the 11 languages:
- one request at a time: one forward pass per (context, continuation), log-softmax over every
  position, as lm-eval computes a request at batch size 1 (the baseline of ``speedup``);
- the library's scorer at batch size 1 (only the continuation positions are projected to the vocabulary);
- the scorer batched, without and with the shared-context KV cache.
All runs must agree (max_abs_logprob_diff). Prints one JSON line with items/s.

    .venv/bin/python bench/eval_throughput.py [--items-per-lang 100] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignx.eval.benchmarks import choice_item, get_benchmark  # noqa: E402
from alignx.eval.loglik import EncodedRequest, LoglikelihoodScorer, encode_requests  # noqa: E402
from alignx.eval.sources import read_documents  # noqa: E402
from alignx.mirror import resolve_mirror  # noqa: E402


def build_tokenizer(mirror: Path, workdir: Path, vocab_size: int):
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    corpus = workdir / "corpus.txt"
    lines = []
    for path in sorted((mirror / "flores200").glob("*.devtest-head500")):
        lines += path.read_text(encoding="utf-8").splitlines()
    for path in sorted((mirror / "xcopa").glob("val.*.jsonl")):
        for row in path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(row)
            lines += [doc["premise"], doc["choice1"], doc["choice2"]]
    corpus.write_text("\n".join(lines), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(workdir / "tokenizer"), vocab_size=vocab_size, model_type="unigram",
        character_coverage=0.9995, bos_id=1, eos_id=2, unk_id=0, pad_id=3, minloglevel=2,
    )
    tok = LlamaTokenizer.from_pretrained(str(workdir))
    assert tok.encode("kwa hiyo"), "the SentencePiece model was not loaded (empty encodes)"
    return tok


def build_model(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return LlamaForCausalLM(config).eval()


def one_at_a_time(model, encoded: list[EncodedRequest]) -> list[float]:
    """The plain computation, request by request (lm-eval's at batch size 1)."""
    out = []
    with torch.inference_mode():
        for req in encoded:
            ids = torch.tensor([list(req.context + req.continuation)[:-1]])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            cont = torch.tensor(req.continuation)
            out.append(float(logprobs[-len(cont):].gather(1, cont[:, None]).sum()))
    return out


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items-per-lang", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mirror = resolve_mirror()
    spec = get_benchmark("xcopa")
    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tokenizer(mirror, Path(tmp), args.vocab_size)
    model = build_model(len(tok))
    items = [choice_item(spec, lang, d) for lang in spec.languages
             for d in read_documents(spec, lang, mirror, limit=args.items_per_lang)]
    requests = [r for item in items for r in item.requests]
    LoglikelihoodScorer(model, tok, args.batch_size).score(requests[:64])  # warm-up
    encoded, t_encode = timed(encode_requests, tok, requests)
    plain, t_plain = timed(one_at_a_time, model, encoded)
    runs = {}
    for name, batch_size, share in [("scorer_batch1", 1, False), ("batched", args.batch_size, False),
                                    ("batched_shared_context", args.batch_size, True)]:
        scores, seconds = timed(LoglikelihoodScorer(model, tok, batch_size, share).score_encoded, encoded)
        runs[name] = (scores, seconds + t_encode)
    t_plain += t_encode
    max_diff = max(abs(p - s[0]) for scores, _ in runs.values() for p, s in zip(plain, scores))
    n = len(items)
    record = {
        "benchmark": "xcopa", "items": n, "requests": len(requests),
        "model": f"llama 4 layers d192, sentencepiece vocab {len(tok)}", "threads": torch.get_num_threads(),
        "batch_size": args.batch_size, "one_at_a_time_items_per_s": round(n / t_plain, 1),
    }
    record.update({f"{name}_items_per_s": round(n / sec, 1) for name, (_, sec) in runs.items()})
    record["speedup"] = round(t_plain / runs["batched_shared_context"][1], 2)
    record["speedup_vs_scorer_batch1"] = round(runs["scorer_batch1"][1] / runs["batched_shared_context"][1], 2)
    record["max_abs_logprob_diff"] = float(f"{max_diff:.2e}")
    record["load_average_1min"] = round(os.getloadavg()[0], 2)  # other processes on the machine skew timings
    print(json.dumps(record))


if __name__ == "__main__":
    main()
