"""Every task's cache key changes with each config field its code reads, and with nothing else.

Keys are computed by calling each task's cache policy directly (no task runs). Every leaf field of the
config is changed one at a time; the fields a stage reads were found by reading its code (named
below with where they are read). Fields that reach a stage through an input artefact (the filter
config, through the filtered data, for the shards) are covered by that artefact's fingerprint, which
is changed separately.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from alignx.artefacts import Artefact
from alignx.config import InstructionSource, PipelineConfig
from alignx.profiles import load_profile
from tasks import data as data_tasks
from tasks import evaluate as eval_tasks
from tasks import train as train_tasks


def _art(name: str) -> Artefact:
    return Artefact(kind="model", path=f"/artefacts/{name}", fingerprint=f"fp-{name}")


# task -> (its parameters besides cfg, the config fields it reads; run_root is read by every task)
TASKS: dict[str, tuple[Any, dict[str, Any], set[str]]] = {
    # collect_source: the mirror, the pair list (pivot x languages) and the per-pair cap; data.workers
    # only spreads the work over processes (the output does not depend on it)
    "collect": (data_tasks.collect, {"source": "tatoeba", "source_fingerprint": "src-fp"},
                {"data.max_pairs_per_pair", "languages", "pivot", "data_mirror"}),
    # filter_pairs / FilterJob: the LID config (and its model file), the filters, the pair list
    "langid-filter": (data_tasks.langid_filter, {"raw": [_art("raw-a"), _art("raw-b")]},
                      {"data.langid", "data.filters", "languages", "pivot"}),
    # write_shards: the shard layout; everything else of data reaches it through the filtered artefact
    "shard": (data_tasks.shard, {"filtered": _art("filtered")}, {"data.shard"}),
    "prepare-base": (train_tasks.prepare_base, {"source_fp": "base-fp"}, {"base_model", "base_model_dtype"}),
    # training stages also read launch.processes (alignx.launch.run_stage): without a global batch size,
    # the number of processes sets it
    # bootstrap_base_model: its section, the training languages, and validate_stage's align layer,
    # which the base model's run record keeps for later stages
    "bootstrap": (train_tasks.bootstrap, {"shards": _art("shards")},
                  {"bootstrap", "languages", "pivot", "stage1.align_layer", "launch"}),
    "stage1": (train_tasks.stage1, {"base": _art("base"), "shards": _art("shards"), "control": False},
               {"stage1", "languages", "pivot", "launch"}),
    # train_stage2: its section (general instruction files by content too), the training languages, and
    # _inherited_align_layer, which falls back on stage1.align_layer for a model without a run record
    "stage2": (train_tasks.stage2, {"model": _art("stage1"), "shards": _art("shards"), "arm": "alignx"},
               {"stage2", "languages", "pivot", "stage1.align_layer", "launch"}),
    # runner.evaluate_model / plan_evaluation: eval (recorded whole in metrics.json), the layer default,
    # off-target LID, the mirror, and data.sources (alignment on a set the run trains on is refused)
    "evaluate": (eval_tasks.evaluate, {"model": _art("final"), "benchmark_fingerprint": "bench-fp", "name": "alignx"},
                 {"eval", "languages", "pivot", "data_mirror", "stage1.align_layer", "data.langid", "data.sources"}),
    # report.write_report: the title's profile name, the benchmark groups and the bootstrap intervals
    "report": (eval_tasks.write_report, {"evals": {"alignx": _art("eval-a"), "base": _art("eval-b")}, "curves": {}},
               {"name", "eval.benchmarks", "eval.bootstrap_resamples", "eval.bootstrap_seed"}),
}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> PipelineConfig:
    return load_profile("smoke", {"run_root": str(tmp_path_factory.mktemp("run"))})


def key(name: str, cfg: PipelineConfig, /, **changed: Any) -> str:
    """The cache key ``name``'s policy computes for its parameters (with ``changed`` ones replaced)."""
    task, params, _ = TASKS[name]
    context = SimpleNamespace(task=SimpleNamespace(fn=task.fn, name=task.name))
    return task.cache_policy.cache_key_fn(context, {**params, "cfg": cfg, **changed})


# ---------------------------------------------------------------- changing one config field
def _flat(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for arg in get_args(annotation) for a in _flat(arg)]
    return [annotation]


def _choices(annotation: Any) -> list[Any]:
    return [c for a in _flat(annotation) if get_origin(a) is Literal for c in get_args(a)]


def _sample(annotation: Any) -> Any:
    """Some value of a type (not validated: the key only serialises it)."""
    kind = next(a for a in _flat(annotation) if a is not type(None))
    origin, args = get_origin(kind), get_args(kind)
    if origin is Literal:
        return args[0]
    if origin is list:
        return [_sample(args[0])]
    if origin is dict:
        return {"zz": _sample(args[1])}
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return kind.model_construct()
    return {int: 3, float: 0.5, str: "changed", bool: True}[kind]


def _other(value: Any, annotation: Any) -> Any:
    """A value different from ``value`` for a field of this type."""
    if isinstance(value, bool):
        return not value
    others = [c for c in _choices(annotation) if c != value and not isinstance(value, list)]
    if others:
        return others[0]
    if value is None:
        return _sample(annotation)
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return f"{value}-changed"
    item = get_args(next(a for a in _flat(annotation) if get_origin(a) in (list, dict)))
    if isinstance(value, list):
        return value[:-1] if value else [_sample(item[0])]
    return dict(list(value.items())[1:]) if value else {"zz": _sample(item[1])}


def leaves(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted name, value, annotation) of every non-section field, depth first."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value, field.annotation


def with_value(model: BaseModel, dotted: str, value: Any) -> BaseModel:
    head, _, rest = dotted.partition(".")
    return model.model_copy(update={head: with_value(getattr(model, head), rest, value) if rest else value})


def _reads(dotted: str, reads: set[str]) -> bool:
    return any(dotted == r or dotted.startswith(f"{r}.") for r in reads)


@pytest.mark.parametrize("name", list(TASKS))
def test_key_changes_with_every_field_read_and_no_other(name, cfg):
    _, _, reads = TASKS[name]
    before = key(name, cfg)
    missed, extra = [], []
    for dotted, value, annotation in leaves(cfg):
        if dotted == "run_root":
            continue
        changed = key(name, with_value(cfg, dotted, _other(value, annotation)))
        if _reads(dotted, reads) and changed == before:
            missed.append(dotted)
        elif not _reads(dotted, reads) and changed != before:
            extra.append(dotted)
    assert not missed, f"{name}: fields it reads but its key ignores: {missed}"
    assert not extra, f"{name}: fields it does not read but its key follows: {extra}"


@pytest.mark.parametrize("name", list(TASKS))
def test_key_changes_with_run_root_and_every_input(name, cfg, tmp_path):
    _, params, _ = TASKS[name]
    before = key(name, cfg)
    assert key(name, cfg.model_copy(update={"run_root": str(tmp_path / "elsewhere")})) != before
    for param, value in params.items():
        if isinstance(value, Artefact):
            other: Any = value.model_copy(update={"fingerprint": "other"})
        elif isinstance(value, list):
            other = [value[0].model_copy(update={"fingerprint": "other"}), *value[1:]]
        elif isinstance(value, dict):
            other = {**value, "control": _art("eval-c")}
        else:
            other = _other(value, type(value))
        assert key(name, cfg, **{param: other}) != before, (name, param)


def test_files_named_by_the_config_are_keyed_by_content(cfg, tmp_path):
    """Same path, new content: a new key (stage-2 instruction files; the LID model file)."""
    instructions = tmp_path / "general.jsonl"
    instructions.write_text('{"instruction": "Say hi", "output": "hi"}\n', encoding="utf-8")
    cfg2 = with_value(cfg, "stage2.general", [InstructionSource(path=str(instructions), language="en")])
    lid_model = tmp_path / "lid.bin"
    lid_model.write_bytes(b"model v1")
    cfg_lid = with_value(cfg, "data.langid.model_path", str(lid_model))
    before = {"stage2": key("stage2", cfg2), "langid-filter": key("langid-filter", cfg_lid),
              "evaluate": key("evaluate", cfg_lid)}
    instructions.write_text('{"instruction": "Say hello", "output": "hello"}\n', encoding="utf-8")
    lid_model.write_bytes(b"model v2, retrained")
    assert key("stage2", cfg2) != before["stage2"]
    assert key("langid-filter", cfg_lid) != before["langid-filter"]
    assert key("evaluate", cfg_lid) != before["evaluate"]
    # an unchanged file keeps its key (no spurious rebuild)
    assert key("stage2", cfg2) == key("stage2", cfg2)


def test_two_tasks_with_equal_inputs_have_different_keys(cfg):
    """INPUTS alone collides across tasks: the task's own name and source are part of every key."""
    shards = _art("shards")
    assert key("bootstrap", cfg, shards=shards) != key("stage1", cfg, shards=shards)


def test_control_stage1_key_ignores_the_alignment_loss_settings(cfg):
    """The control trains L_lm alone: a sweep of lambda_ctr, lambda_lam or tau reuses one control,
    while the AlignX arm's key follows each of them (and the control's still follows its training)."""
    control_key = key("stage1", cfg.for_control(), control=True)
    for dotted, value in [("stage1.lambda_ctr", 1.0), ("stage1.lambda_lam", 0.0), ("stage1.tau", 0.05)]:
        swept = with_value(cfg, dotted, value)
        assert key("stage1", swept.for_control(), control=True) == control_key, dotted
        assert key("stage1", swept) != key("stage1", cfg), dotted
    assert key("stage1", with_value(cfg, "stage1.train.lr", 1e-4).for_control(), control=True) != control_key
    assert cfg.for_control().stage1.lambda_ctr == 0.0 and cfg.for_control().stage1.lambda_lam == 0.0


def test_hub_datasets_are_keyed_by_the_commit_they_resolve_to(monkeypatch):
    """A hub data set read from the hub enters keys as its commit: a new commit under the same id (a
    corpus or a benchmark) is a new key; a pinned revision is resolved as given."""
    from types import SimpleNamespace

    import huggingface_hub

    from alignx.data.readers.hub_dataset import HubParams, HubReader
    from alignx.data.source_catalogue import source_inputs_fingerprint
    from alignx.eval.benchmarks import get_benchmark
    from alignx.eval.sources import source_files

    commits = {"main": "c0ffee01", "v1": "5eed0001"}
    asked = []

    def dataset_info(self, repo_id, revision=None, **kwargs):
        asked.append((repo_id, revision))
        return SimpleNamespace(sha=commits[revision or "main"])

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    reader = HubReader("opus", HubParams(path="Helsinki-NLP/opus-100", pairs=["de-en"]), mirror=None)
    before = source_inputs_fingerprint(reader, [("en", "de")])
    assert before == source_inputs_fingerprint(reader, [("en", "de")])
    commits["main"] = "c0ffee02"  # the data set changed on the hub
    assert source_inputs_fingerprint(reader, [("en", "de")]) != before
    pinned = HubReader("opus", HubParams(path="Helsinki-NLP/opus-100", pairs=["de-en"], revision="v1"), mirror=None)
    source_inputs_fingerprint(pinned, [("en", "de")])
    assert ("Helsinki-NLP/opus-100", "v1") in asked

    xcopa = get_benchmark("xcopa")  # no mirror: read from the hub, keyed by its commit
    assert source_files(xcopa, ["sw"], mirror=None) == [f"hub:{xcopa.source.hub}@c0ffee02/{{code}}/{xcopa.source.split}/sw"]


def test_a_hub_instruction_set_is_keyed_by_the_commit_it_resolves_to(cfg, monkeypatch):
    """An update of a stage-2 hub set (a new commit under the same revision) retrains stage 2."""
    from alignx.data import hub

    commits = {"main": "commit-1"}
    monkeypatch.setattr(hub, "dataset_revision", lambda repo, revision=None: commits[revision or "main"])
    cfg_hub = with_value(cfg, "stage2.general", [InstructionSource(hub="MBZUAI/Bactrian-X", hub_configs=["de"])])
    before = key("stage2", cfg_hub)
    assert key("stage2", cfg_hub) == before
    commits["main"] = "commit-2"  # pushed to the hub
    assert key("stage2", cfg_hub) != before
    pinned = with_value(cfg, "stage2.general", [InstructionSource(hub="MBZUAI/Bactrian-X", hub_configs=["de"],
                                                                  revision="v1")])
    commits["v1"] = "commit-2"
    assert key("stage2", pinned) != key("stage2", cfg_hub)  # the revision asked for is part of the config too
