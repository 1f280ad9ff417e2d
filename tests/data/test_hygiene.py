"""Text hygiene in the data stages: a byte-order mark is stripped, control characters are rejected
(counted) or stop the filter stage naming file and line, and a language pair left empty is flagged."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from alignx.data import data_stages
from alignx.data.filters import CONTROL_CHARS, ControlCharError, ControlCharFilter, ParallelPair
from alignx.data.readers.pair_reader import read_aligned_files
from alignx.data.readers.table import TableParams, TableReader
from tests.data.conftest import copy_head, make_config, tatoeba_folder

LINES = 50  # Tatoeba lines per language pair in the corrupted mirror
NUL_LINES = (3, 5)  # 1-based lines of the German file that get NUL bytes appended
DEL_LINE, CR_LINE = 8, 9  # a DEL in the English file, a bare carriage return inside a German line
EINSTEIN = "In 1935 Einstein"  # the first English line of deu-eng, which gets a byte-order mark


def pp(src: str, tgt: str, row: int = 0) -> ParallelPair:
    return ParallelPair("en", "de", src, tgt, "test", row=row)


# ---------------------------------------------------------------- the filter
def test_control_characters_are_rejected_and_tab_kept():
    pairs = [pp("Hello\x00", "Hallo"), pp("Hi", "Hal\x1flo"), pp("Hi", "Hallo\x7f"), pp("a\rb", "a b"),
             pp("one\ntwo", "eins zwei"), pp("a\tb", "a\tb"), pp("Café\u00a0!", "Straße")]
    f = ControlCharFilter()
    kept = f.apply(pairs)
    assert [p.src_text for p in kept] == ["a\tb", "Café\u00a0!"]
    assert dict(f.stats.dropped) == {CONTROL_CHARS: 5}
    assert f.stats.examples[CONTROL_CHARS][0]["src"] == "Hello\x00"


def test_fail_mode_raises_naming_the_row_and_the_character_and_survives_pickling():
    f = ControlCharFilter(fail=True)
    assert f.apply([pp("fine", "gut", row=1)]) != []
    with pytest.raises(ControlCharError) as info:
        f.apply([pp("fine", "gut", row=1), pp("also fine", "Königin!\x00\x00", row=17)])
    exc = info.value
    assert (exc.row, exc.side, exc.offset) == (17, 1, 8)
    assert str(exc).startswith("source 'test' (en-de) row 17: expected text without control characters, found "
                               "U+0000 (NUL) at character 9 of the de text 'Königin!\\x00\\x00'")
    assert "control_chars: reject" in str(exc)
    located = exc.located("/data/x.deu line 17")
    assert str(located).startswith("/data/x.deu line 17: expected") and isinstance(located, ValueError)
    again = pickle.loads(pickle.dumps(located))  # worker processes send it back pickled
    assert str(again) == str(located) and again.where == "/data/x.deu line 17"


# ---------------------------------------------------------------- the readers
def test_a_byte_order_mark_opens_no_text(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(b"\xef\xbb\xbfHello\r\nWorld\n")
    b.write_bytes("\ufeffHallo\n\ufeffWelt\n".encode())  # only the file's first character is a BOM
    pairs = [p for batch in read_aligned_files(a, b) for p in batch]
    assert pairs == [("Hello", "Hallo"), ("World", "\ufeffWelt")]


def test_a_tsv_header_with_a_byte_order_mark_still_names_its_columns(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes("\ufeffenglish\tgerman\nHello\tHallo\n".encode())
    reader = TableReader("t", TableParams(path=str(path), columns={"en": "english", "de": "german"}), None)
    assert [p for batch in reader.read("en", "de") for p in batch] == [("Hello", "Hallo")]


def test_table_rows_are_located_by_file_line(tmp_path):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"english": "a", "german": "b"}\n\n{"english": "c", "german": "d"}\n', encoding="utf-8")
    tsv = tmp_path / "t.tsv"
    tsv.write_text("english\tgerman\na\tb\nc\td\n", encoding="utf-8")

    def reader(path: Path) -> TableReader:
        return TableReader("t", TableParams(path=str(path), columns={"en": "english", "de": "german"}), None)

    assert reader(jsonl).locate("en", "de", 2, 1) == f"{jsonl} line 3"  # the blank line 2 is no row
    assert reader(tsv).locate("en", "de", 2, 0) == f"{tsv} line 3"  # line 1 is the header


# ---------------------------------------------------------------- the stages on a corrupted mirror copy
def _append_to_lines(path: Path, lines: dict[int, bytes]) -> None:
    rows = path.read_bytes().split(b"\n")
    for n, extra in lines.items():
        rows[n - 1] += extra
    path.write_bytes(b"\n".join(rows))


@pytest.fixture(scope="module")
def dirty(tmp_path_factory, mirror):
    """A mirror copy (50 lines of Tatoeba de/zh/sw): a BOM opens en-de's English file, four en-de pairs
    hold control characters, every Swahili line ends in NUL bytes; collected and filtered (reject)."""
    tmp = tmp_path_factory.mktemp("hygiene")
    root = tmp / "mirror"
    for code in ("de", "zh", "sw"):
        folder = tatoeba_folder(code)
        for f in (mirror / "tatoeba" / folder).iterdir():
            copy_head(f, root / "tatoeba" / folder / f.name, LINES)
    deu = root / "tatoeba" / "deu-eng" / "tatoeba.deu-eng.deu"
    eng = root / "tatoeba" / "deu-eng" / "tatoeba.deu-eng.eng"
    eng.write_bytes(b"\xef\xbb\xbf" + eng.read_bytes())
    _append_to_lines(deu, {n: b"\x00\x00" for n in NUL_LINES})
    _append_to_lines(eng, {DEL_LINE: b"\x7f"})
    rows = deu.read_bytes().split(b"\n")
    rows[CR_LINE - 1] = rows[CR_LINE - 1][:5] + b"\r" + rows[CR_LINE - 1][5:]
    deu.write_bytes(b"\n".join(rows))
    swa = root / "tatoeba" / "eng-swa" / "tatoeba.eng-swa.swa"
    _append_to_lines(swa, {n: b"\x00" for n in range(1, LINES + 1)})

    cfg = make_config(root, tmp / "run", sources=["tatoeba"])
    raw = [data_stages.collect_source("tatoeba", cfg, tmp / "run")]
    filtered = data_stages.filter_pairs(raw, cfg, tmp / "run")
    shards = data_stages.write_shards(filtered, cfg, tmp / "run")
    return {"run": tmp / "run", "cfg": cfg, "raw": raw, "filtered": filtered, "shards": shards, "deu": deu}


def _texts(table) -> list[str]:
    return table.column("src_text").to_pylist() + table.column("tgt_text").to_pylist()


def _shard_texts(shards) -> list[str]:
    """Every text of every split of a shard set."""
    return [t for part in sorted(Path(shards.path).glob("*/*/part-*.parquet")) for t in _texts(pq.read_table(part))]


def test_bom_is_gone_from_raw_filtered_and_shard_texts(dirty):
    raw = pq.read_table(Path(dirty["raw"][0].path) / "en-de.parquet")
    assert raw.column("src_text")[0].as_py().startswith(EINSTEIN)
    filtered = pq.read_table(Path(dirty["filtered"].path) / "en-de.parquet")
    shards = _shard_texts(dirty["shards"])
    for texts in (_texts(raw), _texts(filtered), shards):
        assert texts and not any("\ufeff" in t for t in texts)
    assert any(t.startswith(EINSTEIN) for t in shards)  # the pair itself survives, without its BOM


def test_control_characters_reach_raw_but_are_counted_and_kept_out_of_filtered_and_shards(dirty):
    raw = pq.read_table(Path(dirty["raw"][0].path) / "en-de.parquet")
    assert sum(1 for t in _texts(raw) if "\x00" in t) == len(NUL_LINES)
    report = json.loads((Path(dirty["filtered"].path) / "report.json").read_text(encoding="utf-8"))
    de = report["pairs"]["en-de"]
    assert de["rejected"][CONTROL_CHARS] == len(NUL_LINES) + 2 and de["in"] == LINES
    assert de["in"] == de["kept"] + sum(de["rejected"].values())
    assert report["pairs"]["en-zh"]["rejected"][CONTROL_CHARS] == 0
    (row,) = [r for r in data_stages.summary_table(dirty["filtered"]) if r["pair"] == "en-de"]
    assert row[CONTROL_CHARS] == 4 and row["warning"] == ""
    filtered = _texts(pq.read_table(Path(dirty["filtered"].path) / "en-de.parquet"))
    shards = _shard_texts(dirty["shards"])
    for texts in (filtered, shards):
        assert texts and not any(c in t for t in texts for c in "\x00\x7f\r")


def test_fail_mode_names_the_source_file_and_line(dirty):
    cfg = dirty["cfg"]
    strict = cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "filters": cfg.data.filters.model_copy(update={"control_chars": "fail"})})})
    with pytest.raises(ControlCharError) as info:  # the raw pairs of a reject-mode collect: no re-read
        data_stages.filter_pairs(dirty["raw"], strict, dirty["run"])
    assert str(info.value).startswith(f"{dirty['deu']} line {NUL_LINES[0]}: expected text without control "
                                      f"characters, found U+0000 (NUL) at character")
    assert not list((dirty["run"] / "filtered").glob(".*"))  # nothing half-written left behind
    assert len(list((dirty["run"] / "filtered").iterdir())) == 1  # only the reject-mode output


def test_a_pair_left_empty_warns_and_check_pairs_kept_raises_with_its_counts(dirty):
    filtered = dirty["filtered"]
    warning = f"pair en-sw: no pairs kept of {LINES} read; rejected: {CONTROL_CHARS} {LINES}"
    assert warning in filtered.meta["warnings"]
    rows = {r["pair"]: r for r in data_stages.summary_table(filtered)}
    assert rows["en-sw"]["kept"] == 0 and rows["en-sw"]["warning"] == "no pairs kept"
    assert rows["en-de"]["warning"] == "" and rows["all"]["warning"] == "1 pair(s) kept no pairs"
    for given in (filtered, filtered.path):
        with pytest.raises(data_stages.NoPairsKeptError) as info:
            data_stages.check_pairs_kept(given)
        assert info.value.counts == {"en-sw": {"in": LINES, CONTROL_CHARS: LINES}}
        assert isinstance(info.value, ValueError) and warning in str(info.value)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)


def test_check_pairs_kept_passes_when_every_pair_kept_some(dirty):
    report = json.loads((Path(dirty["filtered"].path) / "report.json").read_text(encoding="utf-8"))
    del report["pairs"]["en-sw"]
    data_stages.check_pairs_kept(report)  # no error
    report["pairs"]["en-de"]["kept"] = 0
    with pytest.raises(data_stages.NoPairsKeptError, match="en-de"):
        data_stages.check_pairs_kept(report)


def test_the_pipeline_stops_before_the_base_model_naming_the_empty_pair(dirty, tmp_path):
    """flows.stage_chain.run_base refuses shards with an empty pair before bootstrap or a base model runs."""
    from flows import stage_chain

    cfg = dirty["cfg"].model_copy(update={"run_root": str(tmp_path / "run")})
    shards = dirty["shards"]
    with pytest.raises(data_stages.NoPairsKeptError, match=f"pair en-sw: no pairs kept of {LINES} read; rejected: {CONTROL_CHARS} {LINES}"):
        stage_chain.run_base(cfg, shards)
    assert not (tmp_path / "run" / "models").exists()
