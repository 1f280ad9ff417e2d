"""Item-by-item parity with lm-evaluation-harness 0.4 on the tiny model (needs the test-only extra
``lm-eval[hf]``; skipped without it).

lm-eval runs its own task definitions (its YAML files, included from the installed package) over the
same local files, read offline through ``dataset_path: json``; per-document log-likelihoods, acc and
acc_norm must equal ours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alignx.eval.benchmarks import get_benchmark
from alignx.eval.loglik import LoglikelihoodScorer
from alignx.eval.scoring import evaluate_choice
from alignx.eval.sources import read_documents

lm_eval = pytest.importorskip("lm_eval")

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
LIMIT = 10
# (our benchmark, language, lm-eval task file, split lm-eval reads, data file relative to its root, root)
CASES = [
    ("xcopa", "sw", "xcopa/default_sw.yaml", "validation", "xcopa/val.sw.jsonl", "mirror"),
    ("xcopa", "zh", "xcopa/default_zh.yaml", "validation", "xcopa/val.zh.jsonl", "mirror"),
    ("xnli", "de", "xnli/xnli_de.yaml", "validation", "xnli/de.validation.jsonl", "fixtures"),
    ("xstorycloze", "sw", "xstorycloze/default_sw.yaml", "validation", "xstorycloze/sw.eval.jsonl", "fixtures"),
    ("xwinograd", "zh", "xwinograd/xwinograd_zh.yaml", "test", "xwinograd/zh.test.jsonl", "fixtures"),
    ("pawsx", "de", "paws-x/paws_de.yaml", "test", "paws-x/de.test.jsonl", "fixtures"),
    ("belebele", "sw", "belebele/belebele_swh_Latn.yaml", "test", "belebele/swh_Latn.jsonl", "fixtures"),
]


def _task_yaml(name: str, include: Path, split: str, data_file: Path, cache: Path) -> str:
    other = {"validation": "test", "test": "validation"}[split]
    return "\n".join([
        f"include: {include}",
        f"task: {name}",
        "dataset_path: json",
        "dataset_name: null",
        f"dataset_kwargs: {{data_files: {{{split}: '{data_file}'}}, cache_dir: '{cache}'}}",
        "training_split: null",
        "fewshot_split: null",
        f"{split}_split: {split}",
        f"{other}_split: null",
        "metric_list: [{metric: acc}, {metric: acc_norm}]",
        "",
    ])


@pytest.fixture(scope="module")
def lm_eval_samples(tmp_path_factory, mirror, eval_fixtures, tiny_model, tiny_tokenizer):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tmp = tmp_path_factory.mktemp("lm-eval-tasks")
    names = []
    for bench, lang, task_file, split, rel, root in CASES:
        name = f"parity_{bench}_{lang}"
        data = (mirror if root == "mirror" else eval_fixtures) / rel
        (tmp / f"{name}.yaml").write_text(_task_yaml(name, LM_EVAL_TASKS / task_file, split, data, tmp / "cache"))
        names.append(name)
    lm = HFLM(pretrained=tiny_model, tokenizer=tiny_tokenizer, batch_size=4, device="cpu")
    out = simple_evaluate(model=lm, tasks=names, task_manager=TaskManager(include_path=str(tmp)), limit=LIMIT,
                          log_samples=True, num_fewshot=0, bootstrap_iters=0)
    return out["samples"]


@pytest.mark.parametrize("bench,lang", [(c[0], c[1]) for c in CASES])
def test_items_equal_lm_eval(lm_eval_samples, mirror, eval_fixtures, tiny_model, tiny_tokenizer, bench, lang):
    case = next(c for c in CASES if c[:2] == (bench, lang))
    spec = get_benchmark(bench)
    docs = read_documents(spec, lang, mirror if case[5] == "mirror" else eval_fixtures, limit=LIMIT)
    _, ours = evaluate_choice(spec, lang, docs, LoglikelihoodScorer(tiny_model, tiny_tokenizer, batch_size=5))
    theirs = sorted(lm_eval_samples[f"parity_{bench}_{lang}"], key=lambda s: s["doc_id"])
    assert len(theirs) == len(ours) == len(docs)
    for mine, sample in zip(ours, theirs):
        lls = [resp[0][0] for resp in sample["resps"]]
        np.testing.assert_allclose(mine["loglikelihoods"], lls, atol=1e-4, rtol=0)
        assert mine["acc"] == sample["acc"] and mine["acc_norm"] == sample["acc_norm"], (bench, lang, sample["doc_id"])
