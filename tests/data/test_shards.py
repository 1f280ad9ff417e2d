"""Parquet shards: layout, schema, compression, deterministic split, manifest, reading back, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from alignx.artefacts import tree_fingerprint
from alignx.data import data_stages
from alignx.data import shards as shards_module
from alignx.data.schema import MANIFEST, PAIR_SCHEMA, read_split
from tests.data.conftest import make_config


@pytest.fixture()
def filtered(small_mirror, tmp_path):
    cfg = make_config(small_mirror, tmp_path / "run", shard={"valid_fraction": 0.1, "rows_per_shard": 100})
    raw = data_stages.collect_source("tatoeba", cfg, tmp_path / "run")
    return cfg, data_stages.filter_pairs([raw], cfg, tmp_path / "run")


def test_layout_schema_compression_and_manifest(filtered, tmp_path):
    cfg, flt = filtered
    record = data_stages.write_shards(flt, cfg, tmp_path / "run")
    root = Path(record.path)
    assert root.parent == tmp_path / "run" / "shards"
    parts = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    assert "train/en-de/part-00000.parquet" in parts and "train/en-de/part-00002.parquet" in parts
    assert {p.split("/")[1] for p in parts} == {"en-de", "en-sw", "en-zh"}
    for part in root.rglob("*.parquet"):
        pf = pq.ParquetFile(part)
        assert pf.schema_arrow.equals(PAIR_SCHEMA)
        assert pf.metadata.num_rows <= 100
        assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    manifest = json.loads((root / MANIFEST).read_text())
    train, valid = read_split(root, "train"), read_split(root, "valid")
    assert manifest["rows"] == {"train": len(train), "valid": len(valid)}
    assert manifest["counts"]["train"]["en-de"] == int((train.tgt_lang == "de").sum())
    assert sorted(f["path"] for f in manifest["files"]) == parts
    assert sum(f["rows"] for f in manifest["files"]) == len(train) + len(valid)
    report = json.loads((Path(flt.path) / "report.json").read_text())
    assert manifest["rejections"]["en-zh"] == report["pairs"]["en-zh"]["rejected"]
    assert manifest["lid_retention"]["zh"] == report["languages"]["zh"]["retention"] > 0.9
    assert manifest["lid_retention"]["sw"] == "off"
    assert manifest["config"]["data"]["shard"] == {"valid_fraction": 0.1, "rows_per_shard": 100, "compression": "zstd"}
    assert manifest["filtered"]["fingerprint"] == flt.fingerprint
    parts_only = tree_fingerprint(root, exclude=(MANIFEST, "_artefact.json"))
    assert manifest["fingerprint"] == parts_only
    assert record.meta["counts"] == manifest["counts"]
    assert 0.04 < len(valid) / (len(train) + len(valid)) < 0.18
    assert not set(train.pair_id) & set(valid.pair_id)
    assert len(set(train.pair_id)) == len(train)  # dedup: every id once


def test_split_is_a_function_of_the_pair_id(filtered, tmp_path):
    cfg, flt = filtered
    first = data_stages.write_shards(flt, cfg, tmp_path / "a")
    more_valid = cfg.model_copy(update={"data": cfg.data.model_copy(update={
        "shard": cfg.data.shard.model_copy(update={"valid_fraction": 0.3, "rows_per_shard": 1000})})})
    second = data_stages.write_shards(flt, cfg, tmp_path / "b")
    third = data_stages.write_shards(flt, more_valid, tmp_path / "c")
    assert first.fingerprint == second.fingerprint  # same input and config: byte-identical shards
    assert Path(third.path).name != Path(first.path).name
    v1, v3 = set(read_split(first.path, "valid").pair_id), set(read_split(third.path, "valid").pair_id)
    assert v1 < v3  # a larger fraction only adds pairs to valid; none moves back
    ids = read_split(first.path, "train").pair_id.tolist()[:50]
    assert shards_module.valid_mask(ids, 0.1).tolist() == [False] * 50


def test_a_failure_mid_write_leaves_no_shard_dir(filtered, tmp_path, monkeypatch):
    cfg, flt = filtered
    calls = {"n": 0}
    original = shards_module.PartWriter.write

    def failing(self, table):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        original(self, table)

    monkeypatch.setattr(shards_module.PartWriter, "write", failing)
    with pytest.raises(OSError, match="disk full"):
        data_stages.write_shards(flt, cfg, tmp_path / "run")
    assert list((tmp_path / "run" / "shards").iterdir()) == []  # neither the final dir nor a temp dir


def test_a_bad_line_during_collect_leaves_no_raw_dir(small_mirror, tmp_path, monkeypatch):
    zho = small_mirror / "tatoeba" / "eng-zho" / "tatoeba.eng-zho.zho"
    zho.write_bytes(zho.read_bytes() + b"\xff\xfe broken\n")
    eng = small_mirror / "tatoeba" / "eng-zho" / "tatoeba.eng-zho.eng"
    eng.write_bytes(eng.read_bytes() + b"broken\n")
    cfg = make_config(small_mirror, tmp_path / "run")
    with pytest.raises(ValueError, match="line 301: not valid UTF-8"):
        data_stages.collect_source("tatoeba", cfg, tmp_path / "run")
    assert list((tmp_path / "run" / "raw").iterdir()) == []
    monkeypatch.setattr(data_stages, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(data_stages, "COLLECT_PARALLEL_MIN_PAIRS", 0)  # the same from worker processes
    two = make_config(small_mirror, tmp_path / "run", workers=2)
    with pytest.raises(ValueError, match=f"{zho}: line 301: not valid UTF-8"):
        data_stages.collect_source("tatoeba", two, tmp_path / "run")
    assert list((tmp_path / "run" / "raw").iterdir()) == []
