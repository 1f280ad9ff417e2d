"""Source readers, one kind per module; this registry maps a catalogue entry's ``kind`` to its reader.

Kinds: ``line_aligned`` (two line-aligned files per pair, Tatoeba), ``multiway`` (one line-aligned
file per language, NTREX / FLORES), ``table`` (JSONL / TSV / Parquet with named columns) and
``hub`` (``datasets.load_dataset``: a hub id, or a local copy saved with ``save_to_disk``).
A new kind is one new module plus one line here.
"""

from __future__ import annotations

from alignx.data.readers.hub_dataset import HubReader
from alignx.data.readers.line_aligned import LineAlignedReader
from alignx.data.readers.multiway import MultiwayReader
from alignx.data.readers.pair_reader import PairReader
from alignx.data.readers.table import TableReader

READERS: dict[str, type[PairReader]] = {
    r.kind: r for r in (LineAlignedReader, MultiwayReader, TableReader, HubReader)
}
