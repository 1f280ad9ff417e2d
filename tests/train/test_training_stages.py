"""Stage entry points: architectures, artefacts, validation before training, stage 2 instruction data."""

from __future__ import annotations

import json
import math

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignx.artefacts import verify_artefact
from alignx.config import ConfigError, InstructionSource
from alignx.model.alignx_model import LAM_HEAD_FILE
from alignx.profiles import parse_config
from alignx.train.training_stages import train_stage1, train_stage2, work_dir_for
from alignx.training_records import read_log
from tests.train.tiny import LANGS, save_model, tiny_causal_lm


def _cfg(tmp_path, **sections):
    raw = {"name": "t", "run_root": str(tmp_path), "languages": list(LANGS),
           "stage1": {"align_layer": 2, "lam_width": 16,
                      "train": {"steps": 3, "micro_batch_size": 4, "lr": 1e-3, "max_length": 160, "checkpoint_every": 2}},
           "stage2": {"translation_pairs_per_lang": 5,
                      "train": {"steps": 2, "micro_batch_size": 4, "lr": 1e-3, "max_length": 160, "mask_prompt": True}}}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_config(raw)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma"])
def test_stage1_runs_on_architectures(arch, sp_tokenizer, bpe_tokenizer, shards, tmp_path):
    # each family with its kind of vocabulary: a Qwen2 checkpoint reloads its tokenizer as byte-level
    # BPE, which decodes a SentencePiece vocabulary without its spaces (the run-time span check stops it)
    tokenizer = bpe_tokenizer if arch == "qwen2" else sp_tokenizer
    base = save_model(tiny_causal_lm(arch, tokenizer, layers=3), tokenizer, tmp_path / "base")
    out = tmp_path / "stage1"
    art = train_stage1(str(base), shards, _cfg(tmp_path), out)
    assert art.kind == "model" and verify_artefact(art)
    assert art.meta["steps"] == 3 and math.isfinite(art.meta["loss"]) and art.meta["align_layer"] == 2
    record = json.loads((out / "alignx.json").read_text())
    assert record["stage"] == "stage1" and record["align_layer"] == 2 and record["languages"][0] == "en"
    assert record["base_model"] == str(base) and set(record["final"]) == {"loss", "lm", "ctr", "lam"}
    assert record["final"]["ctr"] > 0 and record["final"]["lam"] > 0
    assert (out / LAM_HEAD_FILE).is_file()
    log = read_log(out / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["usable"] > 0 for r in log)
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == arch
    assert AutoTokenizer.from_pretrained(out)("Hallo")["input_ids"]
    assert not work_dir_for(out).exists()  # resumable state is dropped once the output is complete


def test_stage2_sft_with_general_instructions_drops_the_head(tiny_llama_dir, shards, tmp_path):
    general = tmp_path / "general.jsonl"
    general.write_text("\n".join(json.dumps({"instruction": f"Count to {i}.", "input": "", "output": " ".join(
        map(str, range(1, i + 1)))}) for i in range(2, 12)), encoding="utf-8")
    cfg = _cfg(tmp_path, stage2={"general": [InstructionSource(path=str(general), language="en").model_dump()]})
    s1 = train_stage1(str(tiny_llama_dir), shards, cfg, tmp_path / "s1")
    art = train_stage2(s1.path, shards, cfg, tmp_path / "s2")
    record = json.loads((tmp_path / "s2" / "alignx.json").read_text())
    assert record["stage"] == "stage2" and record["mask_prompt"] is True and record["align_layer"] == 2
    assert record["examples"] == 4 * 5 * 2 + 10  # 5 pairs per language, both directions, plus 10 general
    assert not (tmp_path / "s2" / LAM_HEAD_FILE).exists()
    assert art.meta["ctr"] == 0.0 and art.meta["steps"] == 2


def test_bad_config_is_refused_before_training_with_every_problem(tiny_llama_dir, shards, tmp_path):
    cfg = _cfg(tmp_path)
    # the config alone cannot know this model's depth (it only checks the bootstrap model's): the stage does
    cfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={"align_layer": 7})})
    with pytest.raises(ConfigError, match=r"align_layer=7 is out of range: the model has 3 layers.*1\.\.3"):
        train_stage1(str(tiny_llama_dir), shards, cfg, tmp_path / "out")
    unknown = cfg.model_copy(update={"languages": ["de", "xx"]})
    with pytest.raises(ConfigError) as err:
        train_stage1(str(tiny_llama_dir), tmp_path / "no-shards", unknown, tmp_path / "out")
    text = str(err.value)
    assert "unknown language code 'xx'" in text and "known:" in text
    assert "no train shards under" in text and "align_layer=7" in text  # all problems, one error
    with pytest.raises(ConfigError, match=r"languages \['th'\] have no train shards"):
        train_stage1(str(tiny_llama_dir), shards, _cfg(tmp_path).model_copy(update={"languages": ["de", "th"]}),
                     tmp_path / "out")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        train_stage2(str(tmp_path / "nowhere"), shards, cfg, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"max_length=24 cuts the response of every example"):
        train_stage1(str(tiny_llama_dir), shards, _cfg(tmp_path, stage1={"train": {"steps": 2, "max_length": 24}}),
                     tmp_path / "out")
    assert not (tmp_path / "out").exists() and not work_dir_for(tmp_path / "out").exists()


def test_stage2_masks_the_prompt_unless_told_otherwise(tmp_path):
    assert _cfg(tmp_path).stage2.train.mask_prompt is True
    assert _cfg(tmp_path, stage2={"train": {"steps": 2}}).stage2.train.mask_prompt is True
    assert _cfg(tmp_path, stage2={"train": {"mask_prompt": False}}).stage2.train.mask_prompt is False


def test_run_record_is_read_whole_or_refused_naming_the_file(tmp_path):
    from alignx.training_records import RUN_RECORD, read_run_record

    assert read_run_record(tmp_path) == {}  # a model no stage of ours wrote
    (tmp_path / RUN_RECORD).write_text('{"stage": "stage1", "align_layer": 2}', encoding="utf-8")
    assert read_run_record(tmp_path) == {"stage": "stage1", "align_layer": 2}
    (tmp_path / RUN_RECORD).write_text('{"stage": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"alignx\.json: expected the run record .* found invalid JSON"):
        read_run_record(tmp_path)


def test_a_tokenizer_larger_than_the_embedding_is_refused(sp_tokenizer, shards, tmp_path):
    """A pad token added to the tokenizer without resizing the model: refused with the sizes, not an
    IndexError deep in the forward pass."""
    model = tiny_causal_lm("llama", sp_tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(str(save_model(model, sp_tokenizer, tmp_path / "model")))
    tokenizer.pad_token = "<not-in-the-vocabulary>"
    tokenizer.save_pretrained(tmp_path / "model")
    cfg = parse_config({"name": "pad", "languages": list(LANGS), "run_root": str(tmp_path),
                        "stage1": {"align_layer": 2, "train": {"steps": 1, "micro_batch_size": 2}}})
    with pytest.raises(ConfigError, match=r"tokenizer has \d+ tokens .*'<not-in-the-vocabulary>'.* embedding has \d+ rows"):
        train_stage1(str(tmp_path / "model"), shards, cfg, tmp_path / "out")


def test_stage2_of_every_arm_reads_the_same_batches(tiny_llama_dir, shards, tmp_path):
    """Only stage 1 differs between the arms: stage 2 from base (SFT-only), from the control's and from
    AlignX's stage-1 checkpoints takes the same examples in the same order (batch fingerprints per step)."""
    cfg = _cfg(tmp_path, stage2={"train": {"steps": 3, "micro_batch_size": 4, "lr": 1e-3, "max_length": 160,
                                           "group_by_length": False}})
    starts = {"sft": str(tiny_llama_dir),
              "control": train_stage1(str(tiny_llama_dir), shards, cfg.for_control(), tmp_path / "control-s1").path,
              "alignx": train_stage1(str(tiny_llama_dir), shards, cfg, tmp_path / "alignx-s1").path}
    logs = {}
    for arm, start in starts.items():
        train_stage2(start, shards, cfg, tmp_path / f"{arm}-s2")
        logs[arm] = read_log(tmp_path / f"{arm}-s2" / "train_log.jsonl")
    batches = {arm: [r["batches"] for r in log] for arm, log in logs.items()}
    assert len(batches["sft"]) == 3 and all(len(b) == 1 for b in batches["sft"])
    assert batches["sft"] == batches["control"] == batches["alignx"]
    assert len({b[0] for b in batches["sft"]}) == 3  # three different batches, not one repeated
    losses = {arm: [r["loss"] for r in log] for arm, log in logs.items()}
    assert losses["sft"] != losses["alignx"]  # the models did differ: same data, different starting points
