"""The training stages: bootstrap base model, stage 1 (AlignX or control) and stage 2 (instruction SFT).

Each stage is configuration plus an objective handed to the one loop (``alignx.train.loop.train``).
A stage validates everything it can before it trains, keeps its resumable checkpoints in a sibling
work dir (``.<out>.work``, so a retried call resumes) and writes its output directory atomically,
ending with the artefact marker.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate.utils import set_seed
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from alignx.artefacts import Artefact, atomic_dir, fingerprint, read_marker, write_marker
from alignx.config import ConfigError, PipelineConfig, TrainConfig
from alignx.data.general_instructions import general_rows
from alignx.data.instructions import cap_pairs_per_language, translation_rows
from alignx.data.schema import read_split
from alignx.data.tokenised import TokenisedExamples, tokenised_examples
from alignx.languages import LANGUAGES
from alignx.model.alignx_model import AlignXModel, CausalLMObjective, check_align_layer
from alignx.model.bootstrap import (
    build_llama, packed_lm_examples, sample_sentences, template_sentences, train_tokenizer,
)
from alignx.distributed_run import process_state, written_once
from alignx.model.lora import add_adapters, merged, merged_into
from alignx.progress import Progress
from alignx.train.loop import TrainResult, train
from alignx.train.parallel_strategies import sub_state
from alignx.model.model_card import write_card
from alignx.tracking import stage_tracker
from alignx.training_records import RUN_RECORD, TRAIN_LOG, read_run_record

log = logging.getLogger(__name__)


def work_dir_for(out_dir: Path) -> Path:
    """Where a stage keeps its resumable state: a hidden sibling of the output that outlives a crash."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.work"


def training_languages(cfg: PipelineConfig) -> list[str]:
    """The pivot then the other languages, without repeats: index = language id for L_lam."""
    return list(dict.fromkeys([cfg.pivot, *cfg.languages]))


def default_align_layer(n_layers: int) -> int:
    """The middle block, as the reference (16 of 32)."""
    return max(1, n_layers // 2)


# ---------------------------------------------------------------- validation
def _model_layers(model: str, problems: list[str]) -> int | None:
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as exc:
        problems.append(f"model {model!r} cannot be loaded (a local checkpoint dir or a hub id): {exc}")
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.num_hidden_layers)


def _check_train(name: str, train_cfg: TrainConfig, problems: list[str]) -> None:
    if train_cfg.warmup_steps and train_cfg.steps is not None and train_cfg.warmup_steps >= train_cfg.steps:
        problems.append(f"{name}.train.warmup_steps={train_cfg.warmup_steps} must be below steps={train_cfg.steps}")


def validate_stage(
    stage: str, cfg: PipelineConfig, shards_dir: Path, model: str | None = None
) -> dict[str, Any]:
    """Check config, shards and model together before any training; raise one ConfigError listing all.

    Returns what the checks resolved: the model's ``num_layers`` and, for bootstrap and stage 1,
    ``align_layer`` (a bootstrap run checks it against the model it is about to build).
    """
    problems: list[str] = []
    resolved: dict[str, Any] = {}
    for code in training_languages(cfg):
        if code not in LANGUAGES:
            problems.append(f"unknown language code {code!r}; known: {', '.join(sorted(LANGUAGES))}")
    train_dir = Path(shards_dir) / "train"
    shard_langs: set[str] = set()
    if not sorted(train_dir.glob("*/part-*.parquet")):
        problems.append(f"no train shards under {train_dir} (expected <src>-<tgt>/part-NNNNN.parquet); "
                        "run the data stage first")
    else:
        for folder in train_dir.iterdir():
            shard_langs.update(folder.name.split("-"))
        missing = [c for c in cfg.languages if c not in shard_langs]
        if missing:
            problems.append(f"languages {missing} have no train shards under {train_dir} "
                            f"(found: {', '.join(sorted(shard_langs))})")
    if stage == "bootstrap":
        n_layers = cfg.bootstrap.model.num_layers
        _check_train("bootstrap", cfg.bootstrap.train, problems)
        if cfg.bootstrap.train.lora is not None:
            problems.append("bootstrap.train.lora: the bootstrap pre-trains a model from random weights; "
                            "adapters on a random model learn nothing useful (remove lora there)")
        if cfg.bootstrap.model.hidden_size % cfg.bootstrap.model.num_heads:
            problems.append("bootstrap.model.hidden_size must be a multiple of num_heads")
    else:
        n_layers = _model_layers(model, problems) if model else None
    if stage in ("bootstrap", "stage1") and n_layers is not None:
        layer = cfg.stage1.align_layer_for(n_layers)
        try:
            check_align_layer(layer, n_layers)
        except ValueError as exc:
            problems.append(f"stage1.align_layer: {exc}")
        resolved["align_layer"] = layer
    if stage == "stage1":
        _check_train("stage1", cfg.stage1.train, problems)
        if cfg.stage1.train.micro_batch_size < 2 and cfg.stage1.lambda_ctr > 0:
            problems.append("stage1.train.micro_batch_size must be at least 2: the contrastive loss's negatives "
                            "are the other examples of the micro-batch")
    if stage == "stage2":
        _check_train("stage2", cfg.stage2.train, problems)
        for i, source in enumerate(cfg.stage2.general):
            if source.path is not None and not Path(source.path).is_file():
                problems.append(f"stage2.general[{i}].path: instruction file {source.path} does not exist")
    resolved["num_layers"] = n_layers
    if problems:
        raise ConfigError(f"for {stage}", problems)
    return resolved


# ---------------------------------------------------------------- shared pieces
def _pairs(shards_dir: Path, cfg: PipelineConfig) -> pd.DataFrame:
    """Train pairs whose two languages are both pipeline languages."""
    pairs = read_split(shards_dir, "train")
    langs = set(training_languages(cfg))
    return pairs[pairs["src_lang"].isin(langs) & pairs["tgt_lang"].isin(langs)].reset_index(drop=True)


def loads_on_meta(train_cfg: TrainConfig) -> bool:
    """Whether this process builds its model without weights: under FSDP with several processes, every
    process but the main one (the weights come from the main one's copy once sharded)."""
    state = process_state()
    return train_cfg.sharding == "fsdp" and state.num_processes > 1 and not state.is_main_process


def frozen_base_in_bf16(train_cfg: TrainConfig | None) -> bool:
    """LoRA under bf16 mixed precision keeps its frozen base in bf16 (half the memory; every matrix
    product runs in bf16 under autocast anyway); adapters and the L_lam head stay float32."""
    from alignx.train.loop import mixed_precision_mode

    return train_cfg is not None and train_cfg.lora is not None and mixed_precision_mode(train_cfg.mixed_precision) == "bf16"


def load_lm(model: str, train_cfg: TrainConfig | None = None):
    """The causal LM of ``model`` in float32 (in bf16 for a LoRA base under bf16, ``frozen_base_in_bf16``);
    built on the meta device, without weights, on a process that ``loads_on_meta``
    (``alignx.train.parallel_strategies.load_from_main`` fills its shards)."""
    import torch

    dtype = torch.bfloat16 if frozen_base_in_bf16(train_cfg) else torch.float32
    if train_cfg is not None and loads_on_meta(train_cfg):
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model), dtype=dtype)
    return AutoModelForCausalLM.from_pretrained(model, dtype=dtype)


def _load(model: str, train_cfg: TrainConfig | None = None):
    """Tokenizer and float32 causal LM (optimizer states want float32 weights; autocast does the rest).

    On a process that ``loads_on_meta`` the LM is built from its config on the meta device: no weights
    are read or allocated there (``alignx.train.parallel_strategies.load_from_main`` fills its shards).
    """

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id serves
    lm = load_lm(model, train_cfg)
    rows = lm.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:  # an id past the embedding fails deep in the forward pass otherwise
        raise ConfigError(f"for model {model}", [
            f"its tokenizer has {len(tokenizer)} tokens (pad token {tokenizer.pad_token!r} = id "
            f"{tokenizer.pad_token_id}) but its input embedding has {rows} rows: a token was added to the "
            f"tokenizer without resizing the model; use a pad token the vocabulary has"])
    return tokenizer, lm


def _examples(tokenizer, rows: pd.DataFrame, max_length: int, languages: list[str], cfg: PipelineConfig) -> TokenisedExamples:
    """The rows' examples from the run's tokenised-examples cache (encoded once, by the main process)."""
    return tokenised_examples(tokenizer, rows, max_length, languages, cfg.resolved_run_root() / "tokenised",
                              is_main=process_state().is_main_process)


def _tracker(cfg: PipelineConfig, stage: str, arm: str, stage_cfg: dict[str, Any], key: str):
    """``train``'s tracker factory: the run ``<profile>/<arm>-<stage>``, opened at the step it starts from."""
    return lambda start: stage_tracker(cfg, stage, arm, stage_cfg, key, start)


def _arm_after(model: str) -> str:
    """The arm a stage-2 run belongs to, from the model it starts from (sft: a base model)."""
    record = read_run_record(Path(model)) if Path(model).is_dir() else {}
    if record.get("stage") != "stage1":
        return "sft"
    return "control" if record.get("control") else "alignx"


def _finish(out_dir: Path, write, result: TrainResult, record: dict[str, Any], cfg: PipelineConfig) -> Artefact:
    """Write the output dir atomically (model files via ``write``, log, run record, model card), then the marker.

    Under several processes only the main one writes (``alignx.distributed_run.written_once``).
    """
    out_dir = Path(out_dir)

    def write_output() -> None:
        full = {**record, "steps": result.steps, "final": result.final, "resumed_from": result.resumed_from,
                "profile": cfg.name, "data_sources": list(cfg.data.sources)}
        with atomic_dir(out_dir) as tmp:
            write(tmp)
            shutil.copyfile(result.log_path, tmp / TRAIN_LOG)
            (tmp / RUN_RECORD).write_text(json.dumps(full, indent=2, sort_keys=True, default=str), encoding="utf-8")
            write_card(tmp, name=out_dir.name)
        write_marker(out_dir, "model", {"stage": full["stage"], "steps": result.steps, **result.final,
                                        **{k: full[k] for k in ("align_layer", "control") if k in full}})
        shutil.rmtree(work_dir_for(out_dir), ignore_errors=True)

    return written_once(out_dir, write_output)


def _check_fit(stage: str, examples: list, usable: int, max_length: int) -> None:
    """Refuse a run whose length limit cuts every response away (it would train on prompts only)."""
    if usable == 0:
        prompt = min(ex.encoded.prompt_len for ex in examples)
        raise ConfigError(f"for {stage}", [
            f"{stage}.train.max_length={max_length} cuts the response of every example (the shortest prompt "
            f"alone takes {prompt} tokens with this tokenizer); raise max_length"])
    if usable < 0.5 * len(examples):
        log.warning("%s: max_length=%d cuts the response of %d of %d examples", stage, max_length,
                    len(examples) - usable, len(examples))


def _inherited_align_layer(model: str, cfg: PipelineConfig, n_layers: int | None) -> int | None:
    """The align layer a stage-2 output reports: its input's record, else the configured / middle one."""
    layer = read_run_record(Path(model)).get("align_layer")
    if layer is not None:
        return int(layer)
    if n_layers is None:
        return cfg.stage1.align_layer if isinstance(cfg.stage1.align_layer, int) else None
    layer = cfg.stage1.align_layer_for(n_layers)
    return layer if 1 <= layer <= n_layers else default_align_layer(n_layers)


def _trained(lm, result: TrainResult, adapters=None, base_model: str | None = None):
    """The trained causal LM: ``lm`` itself, or with LoRA, ``lm`` with its adapters merged: into the
    base read again in float32 when training held it in bf16, so the frozen weights stay exact."""
    if adapters is not None:
        if base_model is not None and next(lm.parameters()).dtype != torch.float32:
            return merged_into(adapters, AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32))
        return merged(adapters)
    return lm


def _save_lm(tmp: Path, lm, result: TrainResult, adapters=None, base_model: str | None = None) -> None:
    """Write the trained LM's weights to ``tmp``. After a sharded run the gathered state dict is written
    as it is (no second model is built to hold it: one full copy in host memory, not two)."""
    if result.full_state is None or adapters is not None:
        _trained(lm, result, adapters, base_model).save_pretrained(tmp)
    else:
        lm.save_pretrained(tmp, state_dict=sub_state(result.full_state, "lm."))


def _model_key(model: str) -> str:
    marker = read_marker(Path(model)) if Path(model).is_dir() else None
    return marker.fingerprint if marker else model


# ---------------------------------------------------------------- stages
def bootstrap_base_model(shards_dir: Path, cfg: PipelineConfig, out_dir: Path, progress: Progress | None = None) -> Artefact:
    """Train a SentencePiece tokenizer and pre-train a small Llama on the shards' monolingual sides."""
    resolved = validate_stage("bootstrap", cfg, shards_dir)
    boot = cfg.bootstrap
    work = work_dir_for(out_dir)
    pairs = _pairs(shards_dir, cfg)
    sentences = list(dict.fromkeys([*pairs["src_text"], *pairs["tgt_text"]]))
    tok_dir = work / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():  # a retried run reuses its tokenizer: same ids, same checkpoint
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    else:
        shutil.rmtree(tok_dir, ignore_errors=True)
        sample = sample_sentences(sentences, boot.tokenizer.max_sentences, boot.train.seed)
        sample += template_sentences(training_languages(cfg), boot.tokenizer.template_repeats)
        tokenizer = train_tokenizer(sample, boot.tokenizer, work / ".tokenizer-tmp")
        (work / ".tokenizer-tmp").rename(tok_dir)
    examples = packed_lm_examples(tokenizer, sentences, boot.train.max_length)
    lm = build_llama(boot.model, tokenizer, seed=boot.train.seed)
    key = fingerprint("bootstrap", boot.tokenizer, boot.model, len(sentences), sentences[:1000])
    log.info("bootstrap: %d sentences -> %d packed blocks of %d tokens", len(sentences), len(examples),
             boot.train.max_length)
    result = train(CausalLMObjective(lm, boot.train.loss_chunk_tokens), examples, tokenizer.pad_token_id, boot.train, work, run_key=key,
                   progress=progress, desc="bootstrap",
                   track=_tracker(cfg, "bootstrap", "base", boot.model_dump(mode="json"), key))

    def write(tmp: Path) -> None:
        _save_lm(tmp, lm, result)
        tokenizer.save_pretrained(tmp)

    record = {"stage": "bootstrap", "config": boot.model_dump(mode="json"), "base_model": None,
              "align_layer": resolved["align_layer"],
              "languages": training_languages(cfg), "blocks": len(examples)}
    return _finish(out_dir, write, result, record, cfg)


def train_stage1(
    base_model: str,
    shards_dir: Path,
    cfg: PipelineConfig,
    out_dir: Path,
    *,
    control: bool = False,
    progress: Progress | None = None,
) -> Artefact:
    """Stage 1 on translation instructions; ``control`` sets both lambdas to 0 (same data, steps, seed)."""
    s1 = cfg.stage1
    base_model = str(base_model)
    resolved = validate_stage("stage1", cfg, shards_dir, base_model)
    align_layer = resolved["align_layer"]
    languages = training_languages(cfg)
    tokenizer, lm = _load(base_model, s1.train)
    rows = translation_rows(_pairs(shards_dir, cfg), cfg.pivot, s1.non_english_pairs)
    if s1.max_examples is not None and len(rows) > s1.max_examples:
        rows = rows.sample(n=s1.max_examples, random_state=s1.train.seed).sort_index()
    examples = _examples(tokenizer, rows, s1.train.max_length, languages, cfg)
    usable = examples.with_both_spans()
    log.info("stage 1: %d examples (%d with both spans inside max_length)", len(examples), usable)
    _check_fit("stage1", examples, usable, s1.train.max_length)
    set_seed(s1.train.seed)  # the head's initialisation: identical in both arms
    objective = AlignXModel(lm, align_layer, tau=s1.tau,
                            lambda_ctr=0.0 if control else s1.lambda_ctr,
                            lambda_lam=0.0 if control else s1.lambda_lam, lam_width=s1.lam_width,
                            loss_chunk_tokens=s1.train.loss_chunk_tokens)
    adapters = add_adapters(lm, s1.train.lora) if s1.train.lora else None  # after the head: same head init
    key = fingerprint("stage1", _model_key(base_model), s1.model_dump(exclude={"train"}), control,
                      align_layer, languages, list(rows["example_id"]))
    result = train(objective, examples, tokenizer.pad_token_id, s1.train, work_dir_for(out_dir), run_key=key,
                   progress=progress, desc="stage1-control" if control else "stage1",
                   track=_tracker(cfg, "stage1", "control" if control else "alignx", s1.model_dump(mode="json"), key))

    def write(tmp: Path) -> None:
        _save_lm(tmp, lm, result, adapters, base_model)
        tokenizer.save_pretrained(tmp)
        objective.save_head(tmp, None if result.full_state is None else sub_state(result.full_state, "lam_head."))

    record = {"stage": "stage1", "control": control, "config": s1.model_dump(mode="json"),
              "base_model": base_model, "align_layer": align_layer, "languages": languages,
              "examples": len(examples), "usable_examples": usable}
    return _finish(out_dir, write, result, record, cfg)


def stage2_rows(shards_dir: Path, cfg: PipelineConfig) -> pd.DataFrame:
    """Stage-2 instructions: capped translation instructions from the shards plus general ones."""
    s2 = cfg.stage2
    pairs = cap_pairs_per_language(_pairs(shards_dir, cfg), s2.translation_pairs_per_lang, cfg.pivot, s2.train.seed)
    frames = [translation_rows(pairs, cfg.pivot, s2.non_english_pairs)]
    frames.extend(general_rows(source) for source in s2.general)
    return pd.concat(frames, ignore_index=True)


def train_stage2(model: str, shards_dir: Path, cfg: PipelineConfig, out_dir: Path, progress: Progress | None = None) -> Artefact:
    """Stage 2: instruction SFT (L_lm only) from a stage-1 checkpoint or the base model; no L_lam head."""
    s2 = cfg.stage2
    model = str(model)
    resolved = validate_stage("stage2", cfg, shards_dir, model)
    tokenizer, lm = _load(model, s2.train)
    rows = stage2_rows(shards_dir, cfg)
    examples = _examples(tokenizer, rows, s2.train.max_length, training_languages(cfg), cfg)
    log.info("stage 2: %d examples (%d general)", len(examples), int((rows["kind"] == "general").sum()))
    _check_fit("stage2", examples, examples.with_target_span(), s2.train.max_length)
    key = fingerprint("stage2", _model_key(model), s2.model_dump(exclude={"train"}), list(rows["example_id"]))
    adapters = add_adapters(lm, s2.train.lora) if s2.train.lora else None
    result = train(CausalLMObjective(lm, s2.train.loss_chunk_tokens), examples, tokenizer.pad_token_id, s2.train, work_dir_for(out_dir),
                   run_key=key, progress=progress, desc="stage2",
                   track=_tracker(cfg, "stage2", _arm_after(model), s2.model_dump(mode="json"), key))

    def write(tmp: Path) -> None:
        _save_lm(tmp, lm, result, adapters, model)
        tokenizer.save_pretrained(tmp)

    record = {"stage": "stage2", "config": s2.model_dump(mode="json"), "base_model": model,
              "align_layer": _inherited_align_layer(model, cfg, resolved["num_layers"]),
              "languages": training_languages(cfg), "examples": len(examples),
              "mask_prompt": s2.train.mask_prompt}
    return _finish(out_dir, write, result, record, cfg)
