"""The profile-key reference (docs/profile-keys.md) is generated from the config models and kept equal to them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from alignx.config import PipelineConfig
from alignx.config_reference import keys, reference_markdown
from alignx.profiles import parse_config

DOC = Path(__file__).resolve().parents[1] / "docs" / "profile-keys.md"


def _accepted(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key the config accepts, found by walking the models (independently of the reference)."""
    out = set()
    for name, field in model.model_fields.items():
        out.add(prefix + name)
        ann = field.annotation
        inner = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else (inner[0] if len(inner) == 1 and
                                                                                 getattr(ann, "__origin__", None) not in (list, dict) else None)
        if sub is not None:
            out |= _accepted(sub, prefix + name + ".")
    return out


def test_the_committed_reference_is_the_generated_one():
    assert DOC.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/profile-keys.md is stale: run `alignx keys --out docs/profile-keys.md`")


def test_every_accepted_key_is_in_the_reference_with_its_default():
    listed = {k: (t, d) for k, t, d, _ in keys()}
    missing = _accepted(PipelineConfig) - set(listed)
    assert not missing, f"keys the config accepts but the reference lacks: {sorted(missing)}"
    text = DOC.read_text(encoding="utf-8")
    for key in _accepted(PipelineConfig):
        assert f"| `{key}` |" in text, key
    cfg = parse_config({"name": "x"})
    assert listed["stage1.lambda_ctr"][1] == repr(cfg.stage1.lambda_ctr)
    assert listed["tracking.tensorboard"][1] == "True" and listed["name"][1] == "required"


def test_a_listed_key_is_a_key_the_config_takes(tmp_path):
    """Each plain key of the reference, set to its own default, is accepted; a key not listed is refused."""
    from alignx.config import ConfigError

    for key, _, default, _ in keys():
        if default and default != "required" and not key.startswith("arms"):
            raw: dict = {"name": "x"}
            node = raw
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = eval(default)  # the repr of a plain default (str, number, bool, None, list, dict)
            parse_config(raw)
    with pytest.raises(ConfigError):
        parse_config({"name": "x", "stage1": {"not_a_key": 1}})
