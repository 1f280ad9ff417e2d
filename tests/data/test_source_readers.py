"""Source readers on the real mirror files, the hub path on local saved copies, and every bad-input message."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignx.config import ConfigError
from alignx.data.readers.pair_reader import MissingSourceFile, SourceError, read_aligned_files
from alignx.data.readers.table import TableParams, TableReader
from alignx.data.source_catalogue import load_catalogue, open_source
from alignx.languages import UnknownLanguageError
from alignx.mirror import DataUnavailableError


def first(reader, src, tgt, n=None):
    return [p for batch in reader.read(src, tgt, limit=n) for p in batch]


# ---------------------------------------------------------------- line-aligned and multi-way
def test_tatoeba_pairs_are_oriented_pivot_first_and_match_the_files(mirror):
    reader = open_source("tatoeba", mirror)
    assert reader.pairs("en", ["bn", "de", "te", "zh"]) == [("en", "bn"), ("en", "de"), ("en", "zh")]
    zh = first(reader, "en", "zh", 3)
    assert zh[0] == ("Tom got drunk with his friends in the park.", "汤姆和他的朋友们在公园喝醉了")
    # ben-eng: Bengali's file comes first alphabetically, English must still be the source side
    bn = first(reader, "en", "bn", 2)
    assert bn[1] == ('What does "Tatoeba" mean?', '"Tatoeba" মানে কী?')
    de = first(reader, "de", "en", 1)  # either orientation can be asked for
    assert de[0][1].startswith("In 1935 Einstein") and de[0][0].startswith("1935 erhielt Einstein")


def test_tatoeba_swahili_reads_the_swa_files_in_full(mirror):
    sw = first(open_source("tatoeba", mirror), "en", "sw")
    assert len(sw) == 387
    assert sw[0] == ("All of these sentences need a full stop.", "Sentensi hizi zote zinahitaji kikomo.")


def test_cap_is_the_first_n_lines(mirror):
    reader = open_source("tatoeba", mirror)
    assert first(reader, "en", "de", 5) == first(reader, "en", "de")[:5]


def test_multiway_gives_line_aligned_pairs_and_cross_pairs(mirror):
    reader = open_source("ntrex128", mirror)
    de = first(reader, "en", "de")
    assert len(de) == 1997
    assert de[0] == ("Welsh AMs worried about 'looking like muppets'",
                     "Mitglieder der Nationalversammlung für Wales befürchten Verwechslungen mit den Muppets")
    de_zh = first(reader, "de", "zh")
    assert de_zh[6][0].startswith("Ein Nationalversammlungsmitglied der Partei Plaid Cymru")
    assert de_zh[6][1].startswith("一位“威尔士党”的AM")
    assert [p[0] for p in de_zh] == [p[1] for p in de]
    reader.params.cross_pairs = True
    assert reader.pairs("en", ["zh", "de"]) == [("en", "zh"), ("en", "de"), ("de", "zh")]


def test_flores_reads_the_mirror_head(mirror):
    th = first(open_source("flores200", mirror), "en", "th")
    assert len(th) == 500
    assert th[0][1].startswith("“ขณะนี้เรามีหนู")


# ---------------------------------------------------------------- tables
def _table_reader(path: Path, fmt: str | None = None) -> TableReader:
    params = TableParams(path=str(path), format=fmt, columns={"en": "english", "de": "german"})
    return TableReader("mytable", params, None)


@pytest.fixture()
def de_pairs(mirror):
    return first(open_source("tatoeba", mirror), "en", "de", 50)


def test_jsonl_tsv_and_parquet_tables_give_the_same_pairs(tmp_path, de_pairs):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "english": a, "german": b}, ensure_ascii=False) + "\n"
                             for i, (a, b) in enumerate(de_pairs)), encoding="utf-8")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("german\tenglish\n" + "".join(f"{b}\t{a}\n" for a, b in de_pairs), encoding="utf-8")
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"english": [a for a, _ in de_pairs], "german": [b for _, b in de_pairs]}), parquet)
    for path in (jsonl, tsv, parquet):
        reader = _table_reader(path)
        assert reader.pairs("en", ["de", "fr"]) == [("en", "de")]
        assert first(reader, "en", "de") == de_pairs, path.suffix
        assert first(reader, "de", "en", 3) == [(b, a) for a, b in de_pairs[:3]], path.suffix


@pytest.mark.parametrize("fmt", ["jsonl", "tsv", "parquet"])
def test_table_missing_column_names_file_column_and_columns_found(tmp_path, fmt):
    path = tmp_path / f"bad.{fmt}"
    if fmt == "jsonl":
        path.write_text('{"english": "Hello.", "deutsch": "Hallo."}\n', encoding="utf-8")
    elif fmt == "tsv":
        path.write_text("english\tdeutsch\nHello.\tHallo.\n", encoding="utf-8")
    else:
        pq.write_table(pa.table({"english": ["Hello."], "deutsch": ["Hallo."]}), path)
    with pytest.raises(SourceError) as err:
        first(_table_reader(path), "en", "de")
    msg = str(err.value)
    assert str(path) in msg and "missing column 'german'" in msg and "'english'" in msg and "'deutsch'" in msg


def test_table_missing_file(tmp_path):
    with pytest.raises(MissingSourceFile, match="missing file .*nowhere.jsonl"):
        first(_table_reader(tmp_path / "nowhere.jsonl"), "en", "de")


# ---------------------------------------------------------------- hub path, offline
def _opus_rows(de_pairs):
    return {"translation": [{"de": b, "en": a} for a, b in de_pairs]}


def test_hub_reader_reads_a_save_to_disk_copy_offline(tmp_path, monkeypatch, de_pairs):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets.Dataset.from_dict(_opus_rows(de_pairs)).save_to_disk(str(tmp_path / "opus-100" / "de-en"))
    reader = open_source("opus100", tmp_path)
    assert reader.pairs("en", ["de", "zh"]) == [("en", "de"), ("en", "zh")]
    assert first(reader, "en", "de") == de_pairs
    assert first(reader, "en", "de", 7) == de_pairs[:7]


def test_hub_reader_reads_a_dataset_dict_and_local_data_files(tmp_path, monkeypatch, de_pairs):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(_opus_rows(de_pairs))}).save_to_disk(
        str(tmp_path / "opus-100" / "de-en"))
    assert first(open_source("opus100", tmp_path), "en", "de") == de_pairs
    files = tmp_path / "files" / "opus-100" / "de-en"
    files.mkdir(parents=True)
    (files / "train.jsonl").write_text("".join(json.dumps({"translation": {"de": b, "en": a}}, ensure_ascii=False)
                                               + "\n" for a, b in de_pairs), encoding="utf-8")
    assert first(open_source("opus100", tmp_path / "files"), "de", "en", 2) == [(b, a) for a, b in de_pairs[:2]]


def test_hub_unavailable_offline_names_both_options(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError) as err:
        first(open_source("opus100", tmp_path), "en", "de")
    msg = str(err.value)
    assert str(tmp_path / "opus-100" / "de-en") in msg and "ALIGNX_DATA_MIRROR" in msg
    assert "Helsinki-NLP/opus-100" in msg and "HF_HUB_OFFLINE" in msg


def test_mirror_set_missing_offline_names_mirror_and_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError) as err:
        first(open_source("flores200", tmp_path), "en", "th")
    msg = str(err.value)
    assert str(tmp_path / "flores200") in msg and "ALIGNX_DATA_MIRROR" in msg
    assert "openlanguagedata/flores_plus" in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(DataUnavailableError, match="tatoeba does not exist.*ALIGNX_DATA_MIRROR.*hub: block"):
        open_source("tatoeba", tmp_path)


def test_multiway_hub_layout_reads_local_copies_of_language_configs(tmp_path, monkeypatch, mirror):
    """FLORES from the hub (one config per language, rows aligned by index), here from save_to_disk copies."""
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    flores = first(open_source("flores200", mirror), "en", "th", 20)
    for code, col in (("eng_Latn", 0), ("tha_Thai", 1)):
        datasets.Dataset.from_dict({"text": [p[col] for p in flores]}).save_to_disk(
            str(tmp_path / "openlanguagedata" / "flores_plus" / code))
    reader = open_source("flores200", tmp_path)  # no flores200/ folder: the hub entry stands in
    assert reader.kind == "hub" and first(reader, "en", "th") == flores
    (tmp_path / "openlanguagedata" / "flores_plus" / "deu_Latn").mkdir()
    datasets.Dataset.from_dict({"text": ["Hallo."] * 5}).save_to_disk(
        str(tmp_path / "openlanguagedata" / "flores_plus" / "deu_Latn"))
    with pytest.raises(SourceError, match="'eng_Latn' and 'deu_Latn' differ in length"):
        first(reader, "en", "de")


# ---------------------------------------------------------------- bad input
def test_mismatched_line_counts_name_both_files_and_counts(small_mirror):
    folder = small_mirror / "tatoeba" / "deu-eng"
    deu = folder / "tatoeba.deu-eng.deu"
    deu.write_bytes(b"".join(deu.read_bytes().splitlines(keepends=True)[:-2]))
    with pytest.raises(SourceError) as err:
        first(open_source("tatoeba", small_mirror), "en", "de")
    msg = str(err.value)
    assert f"{folder / 'tatoeba.deu-eng.eng'} has 300 lines" in msg and f"{deu} has 298 lines" in msg
    with pytest.raises(SourceError, match="298 lines"):  # also when the cap stops reading early
        first(open_source("tatoeba", small_mirror), "en", "de", 10)


def test_invalid_utf8_names_file_and_line(small_mirror):
    eng = small_mirror / "tatoeba" / "eng-zho" / "tatoeba.eng-zho.eng"
    lines = eng.read_bytes().splitlines(keepends=True)
    lines[41] = b"caf\xe9 au lait\n"  # Latin-1, not UTF-8
    eng.write_bytes(b"".join(lines))
    with pytest.raises(SourceError, match=rf"{eng}: line 42: not valid UTF-8"):
        first(open_source("tatoeba", small_mirror), "en", "zh")


def test_missing_file_is_named(small_mirror):
    zho = small_mirror / "tatoeba" / "eng-zho" / "tatoeba.eng-zho.zho"
    zho.unlink()
    with pytest.raises(MissingSourceFile, match=f"missing file {zho}"):
        first(open_source("tatoeba", small_mirror), "en", "zh")
    with pytest.raises(FileNotFoundError):
        list(read_aligned_files(zho, zho))


def test_unknown_language_code_lists_known_codes(mirror):
    reader = open_source("tatoeba", mirror)
    with pytest.raises(UnknownLanguageError, match=r"unknown language code 'xx'; known codes: .*bn, de"):
        first(reader, "en", "xx")
    with pytest.raises(UnknownLanguageError, match="known codes"):
        reader.pairs("en", ["de", "klingon"])


def test_catalogue_problems_are_all_reported(tmp_path):
    bad = tmp_path / "sources.yaml"
    bad.write_text("a: {kind: zip, path: x}\n"
                   "b: {kind: multiway, path: x, files: '{flores}', languages: [en, xx]}\n"
                   "c: {kind: line_aligned, path: x, pairs: [en-de]}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_catalogue(bad)
    problems = err.value.problems
    assert any("unknown kind 'zip'" in p and "line_aligned" in p for p in problems)
    assert any(p.startswith("b.languages") and "'xx'" in p and "known codes" in p for p in problems)
    assert any(p.startswith("c.files") for p in problems)
    with pytest.raises(ConfigError, match="unknown source 'nope'; known sources: flores200, ntrex128, opus100, tatoeba"):
        open_source("nope", tmp_path)


def test_hub_rows_without_the_language_name_row_and_keys(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = {"translation": [{"de": "Hallo.", "fr": "Bonjour."}, {"de": "Ja.", "fr": "Oui."}]}  # a de-fr set
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "opus-100" / "de-en"))
    with pytest.raises(SourceError, match=r"config 'de-en'\): row 1: 'translation' lacks 'en' or 'de'; "
                                          r"keys found: 'de', 'fr'"):
        first(open_source("opus100", tmp_path), "en", "de")
