"""The three entry points end to end on a small private mirror: raw, filtered + report, summary table."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from alignx.artefacts import file_digest, verify_artefact, write_marker
from alignx.data import data_stages
from alignx.data.filters import REASONS
from alignx.data.schema import PAIR_SCHEMA
from tests.data.conftest import make_config


@pytest.fixture()
def collected(small_mirror, tmp_path):
    cfg = make_config(small_mirror, tmp_path / "run", sources=["tatoeba", "ntrex128"], max_pairs_per_pair=250)
    calls = []
    raw = [data_stages.collect_source(s, cfg, tmp_path / "run", progress=lambda *a: calls.append(a))
           for s in cfg.data.sources]
    return cfg, raw, calls


def test_collect_writes_raw_pairs_per_language_pair(collected, tmp_path):
    cfg, (tatoeba, ntrex), calls = collected
    assert tatoeba.kind == "raw" and Path(tatoeba.path) == tmp_path / "run" / "raw" / "tatoeba"
    assert tatoeba.meta["pairs"] == {"en-de": 250, "en-zh": 250, "en-sw": 250}
    assert ntrex.meta["pairs"] == {"en-de": 250, "en-zh": 250, "en-sw": 250}
    assert verify_artefact(tatoeba) and verify_artefact(ntrex)
    table = pq.read_table(Path(tatoeba.path) / "en-zh.parquet")
    assert table.schema.equals(PAIR_SCHEMA) and table.num_rows == 250
    row = table.slice(0, 1).to_pylist()[0]
    assert row["src_text"] == "Tom got drunk with his friends in the park." and row["tgt_lang"] == "zh"
    assert row["source"] == "tatoeba" and row["src_lid"] != row["src_lid"]  # NaN until language ID
    assert calls[-1] == (3, 3, "collect ntrex128 en-sw")


def test_filter_and_shard_end_to_end(collected, tmp_path):
    cfg, raw, _ = collected
    progress = []
    filtered = data_stages.filter_pairs(raw, cfg, tmp_path / "run", progress=lambda *a: progress.append(a))
    assert filtered.kind == "filtered" and verify_artefact(filtered)
    assert Path(filtered.path).parent == tmp_path / "run" / "filtered"
    report = json.loads((Path(filtered.path) / "report.json").read_text())
    assert set(report["pairs"]) == {"en-de", "en-sw", "en-zh"}
    de = report["pairs"]["en-de"]
    assert de["in"] == 500 and de["sources"] == {"tatoeba": 250, "ntrex128": 250}
    assert de["in"] == de["kept"] + sum(de["rejected"].values()) and de["kept"] > 480
    assert report["languages"]["sw"] == {"lid": "off"}
    assert report["languages"]["zh"]["retention"] > 0.95 and report["warnings"] == []
    assert progress[-1][0] == progress[-1][1] == 1500
    rows = data_stages.summary_table(filtered)
    assert [r["pair"] for r in rows] == ["en-de", "en-sw", "en-zh", "all"]
    assert set(rows[0]) == {"pair", "in", "kept", *REASONS, "warning"} and {r["warning"] for r in rows} == {""}
    assert rows[-1]["in"] == 1500 and rows == data_stages.summary_table(report) == data_stages.summary_table(filtered.path)
    kept = pq.read_table(Path(filtered.path) / "en-zh.parquet")
    assert kept.num_rows == report["pairs"]["en-zh"]["kept"]
    assert all(0 < s <= 1 for s in kept.column("tgt_lid").to_pylist())

    shards = data_stages.write_shards(filtered, cfg, tmp_path / "run")
    assert shards.kind == "shards" and verify_artefact(shards) and shards.meta["filtered"] == filtered.path
    assert sum(shards.meta["rows"].values()) == report["totals"]["kept"]


def test_dedup_works_across_sources(collected, tmp_path):
    cfg, (tatoeba, ntrex), _ = collected
    copy = tmp_path / "run" / "raw" / "tatoeba_copy"
    shutil.copytree(tatoeba.path, copy, ignore=shutil.ignore_patterns("_artefact.json"))
    again = write_marker(copy, "raw", {"source": "tatoeba_copy", "pairs": tatoeba.meta["pairs"]})
    once = json.loads((Path(data_stages.filter_pairs([tatoeba], cfg, tmp_path / "run").path) / "report.json").read_text())
    twice = json.loads((Path(data_stages.filter_pairs([tatoeba, again], cfg, tmp_path / "run").path)
                        / "report.json").read_text())
    for pair, counts in once["pairs"].items():
        assert twice["pairs"][pair]["kept"] == counts["kept"]
        assert twice["pairs"][pair]["rejected"]["duplicate"] == counts["rejected"]["duplicate"] + 250 - sum(
            n for r, n in counts["rejected"].items() if r in ("control_chars", "empty", "identical", "too_short",
                                                              "too_long", "length_ratio"))


def test_output_dir_depends_on_config_and_parallel_equals_serial(collected, tmp_path, monkeypatch):
    cfg, raw, _ = collected
    serial = data_stages.filter_pairs(raw, cfg, tmp_path / "run")
    other = data_stages.filter_pairs(raw, cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"filters": cfg.data.filters.model_copy(update={"max_chars": 40})})}), tmp_path / "run")
    assert other.path != serial.path and Path(serial.path).is_dir() and Path(other.path).is_dir()
    assert sum(r["too_long"] for r in other.meta["counts"][:-1]) > 0
    monkeypatch.setattr(data_stages, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(data_stages, "COLLECT_PARALLEL_MIN_PAIRS", 0)
    two = cfg.model_copy(update={"data": cfg.data.model_copy(update={"workers": 2})})
    raw2 = [data_stages.collect_source(s, two, tmp_path / "run2") for s in cfg.data.sources]
    assert [r.fingerprint for r in raw2] == [r.fingerprint for r in raw]
    parallel = data_stages.filter_pairs(raw2, two, tmp_path / "run2")
    for f in sorted(Path(serial.path).glob("*.parquet")):
        assert file_digest(f) == file_digest(Path(parallel.path) / f.name)
    assert parallel.fingerprint == serial.fingerprint


def test_retention_below_floor_warns_with_top_mislabels(collected, small_mirror, tmp_path, caplog):
    _, raw, _ = collected
    strict = make_config(small_mirror, tmp_path / "run", langid={"policies": {"zh": {"labels": ["ko"], "top_k": 1}}})
    with caplog.at_level(logging.WARNING, logger="alignx.data.data_stages"):
        filtered = data_stages.filter_pairs(raw, strict, tmp_path / "run")
    warning, empty = filtered.meta["warnings"]
    assert warning.startswith("language zh: language ID kept 0.0% of") and "top mislabels: zh (" in warning
    assert empty == "pair en-zh: no pairs kept of 500 read; rejected: wrong_language 500"
    assert warning in caplog.text and empty in caplog.text
    assert filtered.meta["retention"]["zh"] == 0.0 and filtered.meta["retention"]["de"] > 0.95


def test_data_source_fingerprint_follows_file_contents(small_mirror, tmp_path):
    cfg = make_config(small_mirror, tmp_path / "run")
    before = data_stages.data_source_fingerprint("tatoeba", cfg)
    assert before == data_stages.data_source_fingerprint("tatoeba", cfg)
    ntrex_before = data_stages.data_source_fingerprint("ntrex128", cfg)
    deu = small_mirror / "tatoeba" / "deu-eng" / "tatoeba.deu-eng.deu"
    deu.write_text(deu.read_text(encoding="utf-8").replace("Einstein", "Einstain", 1), encoding="utf-8")
    assert data_stages.data_source_fingerprint("tatoeba", cfg) != before
    assert data_stages.data_source_fingerprint("ntrex128", cfg) == ntrex_before


def test_a_source_without_the_languages_is_an_error(small_mirror, tmp_path):
    cfg = make_config(small_mirror, tmp_path / "run").model_copy(update={"languages": ["te"]})
    with pytest.raises(ValueError, match="source 'tatoeba' holds none of the pairs en-"):
        data_stages.collect_source("tatoeba", cfg, tmp_path / "run")
