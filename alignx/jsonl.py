"""JSON Lines, read one way everywhere: blank lines skipped, a bad line named by file and number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_jsonl(path: Path | str, error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, value)`` for each non-blank line of a UTF-8 JSON Lines file.

    A line that is not UTF-8 or not JSON raises ``error`` (the caller's error type) with the file, the
    line number and what was found. The file is read a line at a time.
    """
    with Path(path).open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{path} line {n}: expected UTF-8 text, found an invalid byte "
                            f"({exc.reason} at byte {exc.start} of the line)") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path} line {n}: expected a JSON object, found invalid JSON ({exc.msg})") from None
            yield n, value
