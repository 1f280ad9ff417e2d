"""The one JSON Lines reader: blank lines skipped, a bad line named with the caller's error type."""

from __future__ import annotations

import pytest

from alignx.jsonl import iter_jsonl


class MyError(ValueError):
    pass


def test_lines_are_numbered_as_in_the_file_and_blank_ones_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n{"a": "\xc3\xa9"}\r\n[1, 2]')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, {"a": "é"}), (5, [1, 2])]


@pytest.mark.parametrize("bad, found", [(b"{oops\n", "invalid JSON"), (b'{"a": "caf\xe9"}\n', "invalid byte")])
def test_a_bad_line_raises_the_callers_error_naming_file_and_line(tmp_path, bad, found):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n' + bad + b'{"a": 3}\n')
    rows = iter_jsonl(path, MyError)
    assert next(rows) == (1, {"a": 1})  # lines before the bad one are delivered
    with pytest.raises(MyError, match=rf"rows\.jsonl line 2: expected .*, found (an )?{found}"):
        next(rows)
