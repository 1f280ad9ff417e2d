"""Stage 2's general instructions: local files, the hub read at a resolved commit, and their fingerprint."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from alignx.config import InstructionSource
from alignx.data.general_instructions import general_rows, instruction_sources_fingerprint


def test_general_instructions_alpaca_json_and_bactrian_jsonl(tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Name a colour.", "input": "", "output": "Blue."},
                                  {"instruction": "Sum.", "input": "2+2", "output": "4"}]), encoding="utf-8")
    bactrian = tmp_path / "bx.jsonl"
    bactrian.write_text("\n".join(json.dumps({"id": str(i), "instruction": "Sag hallo.", "input": "", "output": "Hallo"})
                                  for i in range(3)), encoding="utf-8")
    rows = general_rows(InstructionSource(path=str(alpaca)))
    assert list(rows["output"]) == ["Blue.", "4"] and set(rows["kind"]) == {"general"} and set(rows["src_lang"]) == {"und"}
    rows = general_rows(InstructionSource(path=str(bactrian), language="de", max_examples=2))
    assert len(rows) == 2 and set(rows["tgt_lang"]) == {"de"}


def test_bad_instruction_file_names_file_row_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "input": "d"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl, row 2: missing field 'output'.*found: input, instruction"):
        general_rows(InstructionSource(path=str(bad)))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl line 2: expected a JSON object, found invalid JSON"):
        general_rows(InstructionSource(path=str(broken)))
    typed = tmp_path / "typed.json"
    typed.write_text(json.dumps([{"instruction": "a", "output": 3}]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"typed\.json, row 1: field 'output' must be a string, found int"):
        general_rows(InstructionSource(path=str(typed)))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        general_rows(InstructionSource(path=str(tmp_path / "missing.json")))


def test_hub_instructions_one_config_per_language(monkeypatch):
    """Online layout (Bactrian-X: one config per language); load_dataset is replaced, no network."""
    import datasets

    calls = []

    def fake_load_dataset(name, config, split, revision):
        calls.append((name, config, split, revision))
        rows = [{"id": f"{config}-{i}", "instruction": f"Instruction {i} ({config})", "input": "", "output": "Ok."}
                for i in range(5)]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = InstructionSource(hub="MBZUAI/Bactrian-X", hub_configs=["de", "zh"], max_examples=3)
    rows = general_rows(source)
    # offline (the tests' default) there is no commit to resolve: the revision as given
    assert calls == [("MBZUAI/Bactrian-X", "de", "train", "main"), ("MBZUAI/Bactrian-X", "zh", "train", "main")]
    assert list(rows["src_lang"]) == ["de"] * 3 + ["zh"] * 3 and set(rows["source"]) == {"MBZUAI/Bactrian-X"}


@pytest.fixture()
def hub_commits(monkeypatch):
    """The hub's commits by revision; HfApi.dataset_info is replaced, so nothing reaches the network."""
    import huggingface_hub

    commits = {"main": "c0ffee01", "v1": "5eed0001"}
    asked = []

    def dataset_info(self, repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return SimpleNamespace(sha=commits[revision or "main"])

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the resolver runs as online, against the fake
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    return commits, asked


def test_hub_instructions_are_read_and_keyed_at_the_commit_they_resolve_to(hub_commits, monkeypatch, tmp_path):
    import datasets

    commits, asked = hub_commits
    loaded = []

    def fake_load_dataset(name, config, split, revision):
        loaded.append((config, revision))
        return datasets.Dataset.from_list([{"instruction": "Sag hallo.", "input": "", "output": "Hallo"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    bactrian = InstructionSource(hub="MBZUAI/Bactrian-X", hub_configs=["de"])
    assert bactrian.revision == "main"
    general_rows(bactrian)
    assert loaded == [("de", "c0ffee01")]  # the commit, not the branch: what the key names is what is read

    local = tmp_path / "alpaca.jsonl"
    local.write_text(json.dumps({"instruction": "Sum.", "input": "2+2", "output": "4"}) + "\n", encoding="utf-8")
    sources = [InstructionSource(path=str(local), language="en"), bactrian]
    before = instruction_sources_fingerprint(sources)
    assert instruction_sources_fingerprint(sources) == before
    commits["main"] = "c0ffee02"  # the data set was updated on the hub: stage 2 must retrain
    updated = instruction_sources_fingerprint(sources)
    assert updated != before

    pinned = bactrian.model_copy(update={"revision": "v1"})
    general_rows(pinned)
    assert ("MBZUAI/Bactrian-X", "v1") in asked and loaded[-1] == ("de", "5eed0001")
    commits["v1"] = commits["main"]  # a revision naming the same commit is the same data: the same key
    assert instruction_sources_fingerprint([sources[0], pinned]) == updated

    local.write_text(json.dumps({"instruction": "Sum.", "input": "2+3", "output": "5"}) + "\n", encoding="utf-8")
    assert instruction_sources_fingerprint(sources) != updated  # a local file by its content
    copy = tmp_path / "elsewhere" / "copy.jsonl"  # the same content at another path: the same key
    copy.parent.mkdir()
    copy.write_bytes(local.read_bytes())
    assert instruction_sources_fingerprint([InstructionSource(path=str(copy), language="en"), bactrian]) == \
        instruction_sources_fingerprint(sources)
