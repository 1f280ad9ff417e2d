"""Model cards: the base model and licence come from the lineage of run records and the model catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignx.model.model_card import CardError, base_lineage, build_card, read_card


def _folder(path: Path, record: dict | None = None, base: dict | None = None) -> Path:
    path.mkdir(parents=True)
    if record is not None:
        (path / "alignx.json").write_text(json.dumps(record))
    if base is not None:
        (path / "base_model.json").write_text(json.dumps(base))
    return path


@pytest.mark.parametrize("spec, hub_id, licence", [
    ("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", {"license": "apache-2.0"}),
    ("gemma-3-270m", "google/gemma-3-270m", {"license": "gemma"}),
])
def test_a_catalogue_base_gives_its_hub_id_and_licence(tmp_path, spec, hub_id, licence):
    base = _folder(tmp_path / "base", base={"spec": spec, "source": "catalogue"})
    s1 = _folder(tmp_path / "control-s1", {"stage": "stage1", "control": True, "base_model": str(base), "steps": 80,
                                           "examples": 640, "final": {"loss": 2.5, "lm": 2.5}, "languages": ["en", "de"],
                                           "data_sources": ["tatoeba", "flores200"]})
    s2 = _folder(tmp_path / "control-s2", {"stage": "stage2", "base_model": str(s1), "steps": 40, "examples": 320,
                                           "final": {"loss": 1.9}, "languages": ["en", "de"]})
    assert [r.get("stage", r.get("spec")) for r in base_lineage(s2)] == ["stage2", "stage1", spec]
    (s2 / "README.md").write_text(build_card(s2))
    header, body = read_card(s2 / "README.md")
    assert header["base_model"] == hub_id and {k: header[k] for k in licence} == licence
    assert header["language"] == ["en", "de"] and "control" in header["tags"]
    assert "| stage1 (control: λ=0) | 80 | 640 |" in body and "| stage2 | 40 | 320 |" in body


def test_a_local_base_with_its_own_card_passes_its_licence_on(tmp_path):
    base = _folder(tmp_path / "hf-model")
    (base / "README.md").write_text("---\nlicense: mit\n---\n\n# a model\n")
    s2 = _folder(tmp_path / "sft-s2", {"stage": "stage2", "base_model": str(base), "steps": 3, "languages": ["en"]})
    header, _ = read_card_text(build_card(s2), tmp_path)
    assert header["license"] == "mit" and header["base_model"] == str(base) and "sft" in header["tags"]


def read_card_text(text: str, tmp_path: Path):
    path = tmp_path / "card.md"
    path.write_text(text)
    return read_card(path)


def test_folders_that_are_not_trained_models_are_refused(tmp_path):
    with pytest.raises(CardError, match="expected a model folder a training stage wrote"):
        build_card(_folder(tmp_path / "plain"))
    loop_a, loop_b = tmp_path / "a", tmp_path / "b"
    _folder(loop_a, {"stage": "stage2", "base_model": str(loop_b)})
    _folder(loop_b, {"stage": "stage1", "base_model": str(loop_a)})
    with pytest.raises(CardError, match="loop"):
        base_lineage(loop_a)
    bad = tmp_path / "bad.md"
    bad.write_text("no header here")
    with pytest.raises(CardError, match="YAML header"):
        read_card(bad)
