"""Drop (or stop at) pairs whose text holds a control character: NUL bytes and the like.

Control characters are C0 (U+0000-U+001F) except tab, and DEL (U+007F). A line-aligned source cannot
hold ``\\n`` inside a text (it ends the line) and its reader removes the line's ``\\r\\n`` ending, so a
``\\r`` found here sits inside the line: a bare carriage return that other tools would read as a line
break. Table and hub sources can hold ``\\n`` inside a cell; for sentence pairs that is no better.
"""

from __future__ import annotations

import re
from typing import Any

from alignx.data.filters.base import CONTROL_CHARS, Filter, FilterContext, FilterResult, ParallelPair

CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_SHOWN_CHARS = 60  # characters of the offending text quoted in an error
_NAMES = ("NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN EM SUB "
          "ESC FS GS RS US").split()  # unicodedata has no names for control characters


class ControlCharError(ValueError):
    """A text holds a control character and ``data.filters.control_chars`` is ``fail``.

    ``where`` says where the pair comes from: the filter knows only the source and the row; the data
    stage replaces it with the source file and line (``located``).
    """

    def __init__(self, source: str, src_lang: str, tgt_lang: str, row: int, side: int, offset: int, text: str,
                 where: str | None = None):
        self.source, self.src_lang, self.tgt_lang, self.row = source, src_lang, tgt_lang, row
        self.side, self.offset, self.text = side, offset, text
        self.where = where or f"source {source!r} ({src_lang}-{tgt_lang}) row {row}"
        char = text[offset]
        name = _NAMES[ord(char)] if ord(char) < len(_NAMES) else "DEL"
        lang = (src_lang, tgt_lang)[side]
        shown = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
        super().__init__(
            f"{self.where}: expected text without control characters, found U+{ord(char):04X} ({name}) at "
            f"character {offset + 1} of the {lang} text {shown!r}; set data.filters.control_chars: reject to "
            f"drop such pairs (counted as {CONTROL_CHARS!r}) instead"
        )

    def located(self, where: str) -> ControlCharError:
        """The same error, naming ``where`` (e.g. ``<file> line <n>``) as the pair's origin."""
        return ControlCharError(self.source, self.src_lang, self.tgt_lang, self.row, self.side, self.offset,
                                self.text, where)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return ControlCharError, (self.source, self.src_lang, self.tgt_lang, self.row, self.side, self.offset,
                                  self.text, self.where)


class ControlCharFilter(Filter):
    """Drops a pair with a control character on either side, or raises ``ControlCharError`` (``fail``)."""

    name = "control_chars"
    reason = CONTROL_CHARS

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail = fail

    @classmethod
    def from_context(cls, ctx: FilterContext) -> ControlCharFilter:
        return cls(fail=ctx.cfg.filters.control_chars == "fail")

    def filter(self, pair: ParallelPair) -> FilterResult:
        for side, text in enumerate((pair.src_text, pair.tgt_text)):
            found = CONTROL_RE.search(text)
            if found is None:
                continue
            if self.fail:
                raise ControlCharError(pair.source, pair.src_lang, pair.tgt_lang, pair.row, side, found.start(), text)
            return False, CONTROL_CHARS
        return True
