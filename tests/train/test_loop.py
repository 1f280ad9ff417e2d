"""The shared training loop: resume after a crash continues the same trajectory; logs and schedules."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignx.config import TrainConfig
from alignx.data.instructions import encode_rows, translation_rows
from alignx.data.schema import read_split
from alignx.model.alignx_model import AlignXModel
from alignx.train.checkpoint import CHECKPOINT_DIR
from alignx.train.loop import make_scheduler, train
from alignx.training_records import read_log
from tests.train.tiny import save_model, tiny_causal_lm

LANGS = ["en", "de", "fr", "ru", "zh"]


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def dropout_llama_dir(sp_tokenizer, tmp_path_factory):
    """A tiny Llama with attention dropout, so the resumed RNG state matters."""
    model = tiny_causal_lm("llama", sp_tokenizer, layers=2)
    model.config.attention_dropout = 0.2
    return save_model(model, sp_tokenizer, tmp_path_factory.mktemp("dropout-llama"))


@pytest.fixture(scope="module")
def examples(sp_tokenizer, shards):
    rows = translation_rows(read_split(shards, "train").head(40))
    return encode_rows(sp_tokenizer, rows, 160, LANGS)


def _objective(model_dir):
    torch.manual_seed(0)
    return AlignXModel(AutoModelForCausalLM.from_pretrained(model_dir), align_layer=1, lam_width=8)


CFG = TrainConfig(steps=6, micro_batch_size=4, grad_accum=2, lr=3e-3, warmup_steps=2, checkpoint_every=2,
                  log_every=1, max_length=160)


def test_resume_after_crash_equals_uninterrupted_run(dropout_llama_dir, examples, sp_tokenizer, tmp_path):
    pad = sp_tokenizer.pad_token_id
    straight = _objective(dropout_llama_dir)
    done = train(straight, examples, pad, CFG, tmp_path / "straight", run_key="k")

    def crash_at_5(step, total, metrics):
        assert total == 6 and set(metrics) >= {"loss", "lm", "ctr", "lam"}
        if step == 5:
            raise Crash("killed")

    with pytest.raises(Crash):
        train(_objective(dropout_llama_dir), examples, pad, CFG, tmp_path / "crashed", run_key="k", progress=crash_at_5)
    assert (tmp_path / "crashed" / CHECKPOINT_DIR / "state.pt").is_file()
    assert len(read_log(tmp_path / "crashed" / "train_log.jsonl")) == 5
    resumed_model = _objective(dropout_llama_dir)
    resumed = train(resumed_model, examples, pad, CFG, tmp_path / "crashed", run_key="k")

    assert resumed.resumed_from == 4
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed_model.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    log_a, log_b = read_log(done.log_path), read_log(resumed.log_path)
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5, 6]
    assert [r["batches"] for r in log_a] == [r["batches"] for r in log_b]
    assert [r["loss"] for r in log_a] == pytest.approx([r["loss"] for r in log_b], abs=1e-5)
    assert len(log_a[0]["batches"]) == 2  # one fingerprint per micro-batch of the accumulated step


def test_checkpoint_of_another_run_is_not_resumed(dropout_llama_dir, examples, sp_tokenizer, tmp_path):
    cfg = CFG.model_copy(update={"steps": 3})
    train(_objective(dropout_llama_dir), examples, sp_tokenizer.pad_token_id, cfg.model_copy(update={"steps": 5}),
          tmp_path, run_key="a", progress=lambda s, t, m: None)
    assert (tmp_path / CHECKPOINT_DIR).is_dir()
    other = train(_objective(dropout_llama_dir), examples, sp_tokenizer.pad_token_id, cfg, tmp_path, run_key="b")
    assert other.resumed_from is None and len(read_log(other.log_path)) == 3
    # gradient checkpointing (the out-of-memory retry) is not part of the trajectory: that run resumes
    train(_objective(dropout_llama_dir), examples, sp_tokenizer.pad_token_id, cfg.model_copy(update={"steps": 5}),
          tmp_path / "gc", run_key="a", progress=lambda s, t, m: None)
    again = train(_objective(dropout_llama_dir), examples, sp_tokenizer.pad_token_id,
                  cfg.model_copy(update={"steps": 5, "gradient_checkpointing": True}), tmp_path / "gc", run_key="a")
    assert again.resumed_from == 4


def test_schedule_warms_up_then_decays():
    param = torch.nn.Parameter(torch.zeros(1))
    for schedule, last in (("linear", 0.0), ("cosine", 0.0), ("constant", 1.0)):
        opt = torch.optim.AdamW([param], lr=1.0)
        sched = make_scheduler(opt, TrainConfig(steps=10, warmup_steps=3, schedule=schedule), 10)
        rates = []
        for _ in range(10):
            rates.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        assert rates[0] < rates[1] < rates[2] < rates[3] == pytest.approx(1.0)
        assert sched.get_last_lr()[0] == pytest.approx(last, abs=1e-9)


def test_one_process_trains_stages_in_different_precisions(dropout_llama_dir, examples, sp_tokenizer, tmp_path):
    """accelerate keeps one precision per process; the local pipeline runs every stage in one process."""
    pad = sp_tokenizer.pad_token_id
    cfg = CFG.model_copy(update={"steps": 2, "grad_accum": 1, "checkpoint_every": 10})
    logs = {}
    for name, precision in (("fp32", "no"), ("bf16", "bf16"), ("fp32-again", "no")):
        done = train(_objective(dropout_llama_dir), examples, pad, cfg.model_copy(update={"mixed_precision": precision}),
                     tmp_path / name, run_key="k")
        logs[name] = [r["loss"] for r in read_log(done.log_path)]
    assert logs["fp32"] == logs["fp32-again"]  # back in float32, exactly
    assert logs["bf16"][0] != logs["fp32"][0]  # the bf16 run really ran under bf16 autocast
    assert logs["bf16"][0] == pytest.approx(logs["fp32"][0], rel=0.02)


def test_global_batch_size_sets_accumulation_from_the_world_size():
    from pydantic import ValidationError

    from alignx.config import TrainConfig
    from alignx.train.loop import accumulation_steps, total_steps

    cfg = TrainConfig(micro_batch_size=16, global_batch_size=128, epochs=1)
    assert [accumulation_steps(cfg, n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert total_steps(cfg, 1280, 1) == total_steps(cfg, 1280, 8) == 10  # same steps on any world size
    with pytest.raises(ValueError, match="not a multiple of micro_batch_size 16 x 3 process"):
        accumulation_steps(cfg, 3)
    with pytest.raises(ValidationError, match="global_batch_size=100 is not a multiple of micro_batch_size=16"):
        TrainConfig(micro_batch_size=16, global_batch_size=100)
    assert accumulation_steps(TrainConfig(micro_batch_size=16, grad_accum=3), 8) == 3  # no global: as given


def test_token_weighted_loss_gives_one_big_batch_whatever_the_split(dropout_llama_dir, examples, sp_tokenizer, tmp_path):
    """The next-token loss is summed over the global batch's tokens and divided by their count: 1 x 8,
    2 x 4 and 4 x 2 (micro-batches x accumulation) train the same trajectory on uneven lengths."""
    from alignx.data.collate import collate, micro_batch_schedule
    from alignx.model.alignx_model import CausalLMObjective
    from alignx.model.losses import target_tokens

    pad = sp_tokenizer.pad_token_id
    base = TrainConfig(steps=3, lr=3e-3, warmup_steps=0, checkpoint_every=10, log_every=1, max_length=160,
                       mask_prompt=True, mixed_precision="no", group_by_length=False)
    lengths = [len(ex.encoded.input_ids) for ex in examples]
    groups = [ex.group for ex in examples]
    splits = {(8, 1): None, (2, 4): None, (4, 2): None}
    for micro, accum in splits:
        schedule = micro_batch_schedule(lengths, micro, 3 * accum, base.seed, base.group_by_length, groups)
        steps = [sorted(i for b in schedule[s * accum:(s + 1) * accum] for i in b) for s in range(3)]
        splits[micro, accum] = steps
        if micro == 2:  # the split's micro-batches really differ in target tokens
            counts = [int(target_tokens(collate([examples[i] for i in b], pad, "left", True)["labels"]))
                      for b in schedule[:accum]]
            assert len(set(counts)) > 1, counts
    assert len({str(v) for v in splits.values()}) == 1  # every split takes the same examples per step

    weights, losses = {}, {}
    for micro, accum in splits:
        torch.manual_seed(0)
        model = CausalLMObjective(AutoModelForCausalLM.from_pretrained(dropout_llama_dir, attention_dropout=0.0))
        done = train(model, examples, pad, base.model_copy(update={"micro_batch_size": micro, "grad_accum": accum}),
                     tmp_path / f"{micro}x{accum}", run_key="k")
        weights[micro, accum] = {k: v.clone() for k, v in model.state_dict().items()}
        losses[micro, accum] = [r["lm"] for r in read_log(done.log_path)]
    for split in ((2, 4), (4, 2)):
        assert losses[split] == pytest.approx(losses[8, 1], abs=2e-5)
        for name, value in weights[8, 1].items():
            torch.testing.assert_close(weights[split][name], value, atol=2e-5, rtol=1e-4, msg=name)
