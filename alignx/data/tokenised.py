"""Tokenised training examples as their own cached artefact: one Arrow file, memory-mapped by every process.

Encoding a corpus is the slow part of a stage's start, and under several processes every one of them
did it. Now the examples of (tokenizer, instruction rows, max_length, languages) are encoded once,
by the main process, into ``<run root>/tokenised/examples-<key>.arrow`` (written under a temporary
name, then renamed); every process, and every later stage or arm with the same inputs (the control
and AlignX encode the same rows), maps that file instead. The key hashes the tokenizer's content (not
its path) and the rows' texts, so a changed file or row is a new artefact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from alignx.artefacts import atomic_file
from alignx.data.instructions import PROMPT_TEMPLATE, EncodedExample, TrainExample, encode_rows

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())),
    ("prompt_len", pa.int32()),
    ("src_start", pa.int32()), ("src_end", pa.int32()),  # -1: the span was cut by max_length
    ("tgt_start", pa.int32()), ("tgt_end", pa.int32()),
    ("src_lang", pa.int16()), ("tgt_lang", pa.int16()),
    ("group", pa.int64()),
])
_ROW_COLUMNS = ["kind", "instruction", "input", "output", "src_lang", "tgt_lang"]
WAIT_S = 24 * 3600  # how long another process waits for the main one to write the file


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what the tokenizer does: its full serialisation when it has one, else vocabulary and
    special tokens, and whether it adds BOS/EOS."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([tokenizer.all_special_tokens, getattr(tokenizer, "add_bos_token", None),
                         getattr(tokenizer, "add_eos_token", None), tokenizer.padding_side], default=str).encode())
    return h.hexdigest()


def rows_fingerprint(rows: pd.DataFrame) -> str:
    """A hash of the instruction rows' texts and languages, in order."""
    hashed = pd.util.hash_pandas_object(rows[_ROW_COLUMNS].astype(str), index=False).to_numpy()
    return hashlib.blake2b(hashed.tobytes(), digest_size=16).hexdigest()


def examples_key(tokenizer, rows: pd.DataFrame, max_length: int, languages: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in (tokenizer_fingerprint(tokenizer), rows_fingerprint(rows), str(max_length), ",".join(languages),
                 PROMPT_TEMPLATE):
        h.update(part.encode() + b"\x00")
    return h.hexdigest()


def _to_table(examples: list[TrainExample]) -> pa.Table:
    def span(ex: TrainExample, name: str, i: int) -> int:
        value = getattr(ex.encoded, name)
        return -1 if value is None else value[i]

    return pa.table({
        "input_ids": [ex.encoded.input_ids for ex in examples],
        "prompt_len": [ex.encoded.prompt_len for ex in examples],
        "src_start": [span(ex, "src_span", 0) for ex in examples],
        "src_end": [span(ex, "src_span", 1) for ex in examples],
        "tgt_start": [span(ex, "tgt_span", 0) for ex in examples],
        "tgt_end": [span(ex, "tgt_span", 1) for ex in examples],
        "src_lang": [ex.src_lang for ex in examples],
        "tgt_lang": [ex.tgt_lang for ex in examples],
        "group": [ex.group for ex in examples],
    }, schema=SCHEMA)


class TokenisedExamples(Sequence[TrainExample]):
    """The examples of one Arrow file, read through a memory map; an example is built when indexed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with pa.memory_map(str(self.path)) as source:
            table = pa.ipc.open_file(source).read_all()
        if table.schema != SCHEMA:
            raise ValueError(f"{self.path}: not a tokenised-examples file (schema {table.schema})")
        ids = table.column("input_ids").combine_chunks()
        self._offsets = ids.offsets.to_numpy()
        self._ids = ids.values.to_numpy()
        self._cols = {name: table.column(name).to_numpy() for name in SCHEMA.names[1:]}

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> TrainExample:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        c = self._cols
        src = (int(c["src_start"][i]), int(c["src_end"][i])) if c["src_start"][i] >= 0 else None
        tgt = (int(c["tgt_start"][i]), int(c["tgt_end"][i])) if c["tgt_start"][i] >= 0 else None
        encoded = EncodedExample(self._ids[self._offsets[i]:self._offsets[i + 1]].tolist(), int(c["prompt_len"][i]),
                                 src, tgt)
        return TrainExample(encoded, int(c["src_lang"][i]), int(c["tgt_lang"][i]), int(c["group"][i]))

    def lengths(self) -> list[int]:
        return np.diff(self._offsets).tolist()

    def groups(self) -> list[int]:
        return self._cols["group"].tolist()

    def with_both_spans(self) -> int:
        """Examples whose source and target spans both fit (they count for L_ctr and L_lam)."""
        return int(((self._cols["src_start"] >= 0) & (self._cols["tgt_start"] >= 0)).sum())

    def with_target_span(self) -> int:
        return int((self._cols["tgt_start"] >= 0).sum())


def tokenised_examples(
    tokenizer, rows: pd.DataFrame, max_length: int, languages: Sequence[str], cache_dir: Path, *, is_main: bool = True,
) -> TokenisedExamples:
    """The examples of ``rows``, from the cache when they were encoded before, else encoded now.

    Only the main process encodes and writes; the others wait for its file (no collective, so a long
    encode cannot run into a process-group timeout; if the main process dies, the launcher ends them).
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"examples-{examples_key(tokenizer, rows, max_length, languages)}.arrow"
    if path.is_file():
        try:
            examples = TokenisedExamples(path)
            log.info("tokenised examples from the cache: %s", path)
            return examples
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            if not is_main:
                raise ValueError(f"{path}: unreadable tokenised-examples file ({exc})") from exc
            log.warning("%s is unreadable (%s); encoding the examples again", path, exc)
            path.unlink()
    if is_main:
        started = time.perf_counter()
        table = _to_table(encode_rows(tokenizer, rows, max_length, languages))
        with atomic_file(path) as tmp, pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
            writer.write_table(table)
        log.info("tokenised %d examples in %.1f s -> %s", len(table), time.perf_counter() - started, path)
    else:
        deadline = time.monotonic() + WAIT_S
        while not path.is_file():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: the main process never wrote the tokenised examples")
            time.sleep(0.5)
    return TokenisedExamples(path)
