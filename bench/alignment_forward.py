"""Alignment read-out: the old full forward pass against the truncated one, side by side in one run.

Pools FLORES sentences (the "alone" encoding) through a random Llama shaped like a small real model
(default: 30 layers like SmolLM2-135M, but d64 and a 49k vocabulary so it runs in seconds on a CPU):
- ``full_forward``: what ``pooled_states`` did before: the whole model with ``output_hidden_states``
  (every block, the final norm, the LM head on the last position) and all layers stacked;
- ``truncated_all``: ``pooled_states`` for every layer (the decoder stack only, no LM head);
- ``truncated_to_middle``: every layer up to the middle one (the align layer), the pass stopped there;
- ``truncated_middle_only``: just the middle layer.
Each variant's pooled vectors must equal the full pass's (max_abs_diff). Prints one JSON line.

    .venv/bin/python bench/alignment_forward.py [--layers 30] [--sentences 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alignx.eval.alignment import pooled_states  # noqa: E402
from alignx.eval.sources import read_parallel  # noqa: E402
from alignx.mirror import resolve_mirror  # noqa: E402


@torch.inference_mode()
def full_forward_pooled(model, sequences, spans, batch_size: int, pad_id: int) -> np.ndarray:
    """The previous implementation: every layer's states from one full forward pass, stacked and pooled."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out = None
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        width = max(len(sequences[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        pool = torch.zeros((len(batch), width), dtype=torch.float32)
        for row, i in enumerate(batch):
            ids[row, :len(sequences[i])] = torch.tensor(list(sequences[i]))
            mask[row, :len(sequences[i])] = 1
            s, e = spans[i]
            pool[row, s:e] = 1.0 / (e - s)
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1).hidden_states
        stacked = torch.stack([h.float() for h in hidden])
        pooled = torch.einsum("lbtd,bt->lbd", stacked, pool).numpy()
        if out is None:
            out = np.zeros((pooled.shape[0], len(sequences), pooled.shape[2]), dtype=np.float32)
        out[:, batch] = pooled
    return out


def build_model(layers: int, hidden: int, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def best_of(repeats: int, fn, *args, **kwargs):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return result, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a busy shared machine more threads spin and "
                             "make timings swing tenfold)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # a deep random model's later states underflow into denormals, which slow CPU arithmetic several
    # times over and would flatter the truncated pass; trained models do not have them
    torch.set_flush_denormal(True)
    texts = read_parallel("flores", ["en"], resolve_mirror(), limit=args.sentences)["en"]
    # byte-level ids (random weights: speed depends on lengths, not on which tokens)
    sequences = [[1, *(b + 3 for b in t.encode("utf-8")[:120])] for t in texts]
    spans = [(1, len(s)) for s in sequences]
    model = build_model(args.layers, args.hidden, args.vocab)
    middle = args.layers // 2
    variants = {"truncated_all": list(range(args.layers + 1)), "truncated_to_middle": list(range(middle + 1)),
                "truncated_middle_only": [middle]}
    full_forward_pooled(model, sequences[:args.batch_size], spans[:args.batch_size], args.batch_size, 0)  # warm-up
    reference, t_full = best_of(args.repeats, full_forward_pooled, model, sequences, spans, args.batch_size, 0)
    record = {"model": f"llama {args.layers} layers d{args.hidden}, vocab {args.vocab}, random weights",
              "sentences": len(sequences), "tokens": sum(map(len, sequences)), "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "repeats_best_of": args.repeats, "full_forward_s": round(t_full, 3)}
    for name, layers in variants.items():
        pooled, seconds = best_of(args.repeats, pooled_states, model, sequences, spans, args.batch_size, 0, None, layers)
        record[f"{name}_s"] = round(seconds, 3)
        record[f"{name}_speedup"] = round(t_full / seconds, 2)
        record[f"{name}_max_abs_diff"] = float(f"{np.abs(pooled - reference[layers]).max():.2e}")
    record["load_average_1min"] = round(os.getloadavg()[0], 2)  # other processes on the machine skew timings
    print(json.dumps(record))


if __name__ == "__main__":
    main()
