"""The data flow on the ephemeral API: cache hits, exact invalidation, and rebuilding a deleted shard."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.flows.conftest import copy_mirror

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def data_env(tmp_path_factory, mirror):
    root = tmp_path_factory.mktemp("dataflow")
    local_mirror = copy_mirror(mirror, root / "mirror", ["deu-eng", "eng-zho"], ["ntrex128"])
    return root, local_mirror


def _params(root: Path, local_mirror: Path, **extra):
    from flows.params import RunParams

    overrides = {"run_root": str(root / "run"), "data_mirror": str(local_mirror), "languages": ["de", "zh"],
                 "data.sources": ["tatoeba", "ntrex128"], "data.max_pairs_per_pair": 150, **extra}
    return RunParams(profile="smoke", overrides=overrides)


def test_cache_hits_and_exact_invalidation(data_env, states):
    from alignx.artefacts import Artefact, verify_artefact
    from alignx.data.schema import read_split
    from flows.stage_flows import data_flow

    root, local_mirror = data_env
    first = data_flow(_params(root, local_mirror), return_state=True)
    assert first.is_completed(), first.message
    record = Artefact.model_validate(first.result())
    assert verify_artefact(record)
    assert len(read_split(record.path, "train")) > 100

    # Same inputs: every task is a cache hit.
    second = data_flow(_params(root, local_mirror), return_state=True)
    got = states(second)
    assert set(got) == {"collect", "langid-filter", "shard"}
    assert all(s == "Cached" for names in got.values() for s in names), got

    # One filter setting changed: collect stays cached, filter and shard re-run.
    third = data_flow(_params(root, local_mirror, **{"data.filters.max_chars": 300}), return_state=True)
    got = states(third)
    assert got["collect"] == ["Cached", "Cached"], got
    assert got["langid-filter"] == ["Completed"] and got["shard"] == ["Completed"], got

    # One input file changed: only that source's collect re-runs (plus what follows).
    eng = local_mirror / "tatoeba" / "deu-eng" / "tatoeba.deu-eng.eng"
    deu = local_mirror / "tatoeba" / "deu-eng" / "tatoeba.deu-eng.deu"
    eng.write_text("This sentence was added.\n" + eng.read_text(encoding="utf-8"), encoding="utf-8")
    deu.write_text("Dieser Satz wurde hinzugefügt.\n" + deu.read_text(encoding="utf-8"), encoding="utf-8")
    fourth = data_flow(_params(root, local_mirror), return_state=True)
    got = states(fourth)
    assert sorted(got["collect"]) == ["Cached", "Completed"], got
    assert got["langid-filter"] == ["Completed"] and got["shard"] == ["Completed"], got
    shards = Artefact.model_validate(fourth.result())
    train = read_split(shards.path, "train")
    valid = read_split(shards.path, "valid")
    texts = set(train.src_text) | set(train.tgt_text) | set(valid.src_text) | set(valid.tgt_text)
    assert "Dieser Satz wurde hinzugefügt." in texts

    # A deleted shard file is rebuilt, not returned from the cache.
    victim = sorted(Path(shards.path).rglob("part-*.parquet"))[0]
    victim.unlink()
    fifth = data_flow(_params(root, local_mirror), return_state=True)
    rebuilt = Artefact.model_validate(fifth.result())
    assert victim.exists()
    assert verify_artefact(rebuilt)
    assert "Completed" in states(fifth)["shard"]
