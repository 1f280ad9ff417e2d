"""The pipeline flow on the smoke profile: a failing evaluation, its repair, the report, adding an arm."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.flows.conftest import copy_mirror

pytestmark = pytest.mark.usefixtures("prefect_api")

TRAIN_TASKS = {"collect", "langid-filter", "shard", "bootstrap", "stage1", "stage2"}


@pytest.fixture(scope="module")
def env(tmp_path_factory, mirror):
    root = tmp_path_factory.mktemp("pipeline")
    local_mirror = copy_mirror(mirror, root / "mirror", ["deu-eng", "eng-zho", "eng-swa"], ["flores200", "xcopa", "mgsm"])
    return root, local_mirror


def _params(root: Path, local_mirror: Path, arms: list[str]):
    from flows.params import PipelineParams

    return PipelineParams(profile="smoke", arms=arms,
                          overrides={"run_root": str(root / "run"), "data_mirror": str(local_mirror)})


def test_failed_evaluation_then_repair_then_added_arm(env, states, monkeypatch):
    import alignx.preflight
    from flows.pipeline import pipeline

    root, local_mirror = env
    bench = local_mirror / "xcopa" / "val.zh.jsonl"
    saved = bench.read_bytes()
    bench.unlink()
    bench.mkdir()  # unreadable as a file

    # before the run: the preflight stops it with the file named, before any stage
    stopped = pipeline(_params(root, local_mirror, ["base", "sft", "alignx"]), return_state=True)
    assert stopped.is_failed()
    with pytest.raises(Exception) as info:
        stopped.result()
    assert "val.zh.jsonl" in str(info.value) and "before any work" in str(info.value)
    assert not states(stopped), states(stopped)

    # broken while the run trains (after its preflight): the evaluate stage fails naming the file
    bench.rmdir()
    bench.write_bytes(saved)
    real_preflight = alignx.preflight.preflight

    def preflight_then_break(cfg):
        real_preflight(cfg)
        bench.unlink()
        bench.mkdir()

    monkeypatch.setattr(alignx.preflight, "preflight", preflight_then_break)
    failed = pipeline(_params(root, local_mirror, ["base", "sft", "alignx"]), return_state=True)
    monkeypatch.setattr(alignx.preflight, "preflight", real_preflight)
    assert failed.is_failed()
    with pytest.raises(Exception) as info:
        failed.result()
    assert "val.zh.jsonl" in str(info.value)
    got = states(failed)
    assert {"stage1", "stage2", "bootstrap"} <= set(got)
    assert all(s == "Completed" for name in TRAIN_TASKS for s in got.get(name, [])), got

    # Repair and run again: every data and training task is a cache hit; only evaluation runs.
    bench.rmdir()
    bench.write_bytes(saved)
    repaired = pipeline(_params(root, local_mirror, ["base", "sft", "alignx"]), return_state=True)
    assert repaired.is_completed(), repaired.message
    got = states(repaired)
    for name in TRAIN_TASKS:
        assert got.get(name) and all(s == "Cached" for s in got[name]), (name, got)
    assert "Completed" in got["evaluate"]

    result = repaired.result()
    report = Path(result["report"]).read_text(encoding="utf-8")
    metrics = {arm: json.loads((Path(p) / "metrics.json").read_text()) for arm, p in result["evals"].items()}
    for arm in ("base", "sft", "alignx"):
        assert arm in metrics
        tasks = metrics[arm]["results"]
        assert any(t.startswith("xcopa") for t in tasks)
        assert any(t.startswith("flores") for t in tasks)
        assert any(t.startswith("mgsm") for t in tasks)
        assert any(t.startswith("align") for t in tasks)
    for word in ("xcopa", "flores", "mgsm"):
        assert word.lower() in report.lower()
    # tables carry numbers for every arm
    numbers = re.findall(r"\|\s*-?\d+\.\d+", report)
    assert len(numbers) > 10

    # Adding the control arm trains only the control (and evaluates it); the rest are cache hits.
    added = pipeline(_params(root, local_mirror, ["base", "sft", "control", "alignx"]), return_state=True)
    assert added.is_completed(), added.message
    got = states(added)
    for name in ("collect", "langid-filter", "shard", "bootstrap"):
        assert all(s == "Cached" for s in got[name]), (name, got)
    assert sorted(got["stage1"]) == ["Cached", "Completed"], got
    assert sorted(got["stage2"]) == ["Cached", "Cached", "Completed"], got
    assert "control" in added.result()["evals"]


def test_bad_parameters_are_rejected_before_work(env):
    from pydantic import ValidationError

    from flows.params import PipelineParams
    from flows.pipeline import pipeline

    with pytest.raises(ValidationError) as info:
        PipelineParams(profile="nonexistent")
    assert "smoke" in str(info.value) and "demo" in str(info.value)
    with pytest.raises(ValidationError) as info:
        PipelineParams(profile="smoke", stop_after="stage9")
    assert "stage1" in str(info.value) and "evaluate" in str(info.value)
    root, local_mirror = env
    # A bad override fails the flow at config validation, before any task runs, listing every problem.
    state = pipeline(_params(root, local_mirror, ["base"]).model_copy(
        update={"overrides": {"stage1.tau": -1, "languages": ["de", "xx"], "run_root": str(root / "bad")}}),
        return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception) as info:
        state.result()
    assert "tau" in str(info.value) and "xx" in str(info.value)
    assert not (root / "bad").exists()


def test_trained_models_carry_cards_and_publish_refuses_offline(env, capsys, monkeypatch):
    """After the runs above: every trained folder has a card; ``alignx card`` rebuilds it with the metrics of
    the run's evaluations of that folder (values as metrics.json has them, each inside its interval)."""
    import yaml

    from alignx.model.model_card import read_card
    from flows.cli import main

    root, _ = env
    models = root / "run" / "models"
    alignx = next(p for p in models.glob("alignx-stage2-*") if (p / "_artefact.json").is_file())
    header, body = read_card(alignx / "README.md")  # written by the training stage, before any evaluation
    record = json.loads((alignx / "alignx.json").read_text())
    assert header["language"] == record["languages"] and {"en", "de", "zh"} <= set(header["language"]), header
    assert header["license"] == "other" and "base_model" not in header, header  # bootstrapped: no base to inherit
    assert record["profile"] == "smoke" and record["data_sources"] == ["tatoeba"], record
    assert {"alignx", "stage1", "stage2"} <= set(header["tags"]) and "model-index" not in header, header
    assert "| stage1 |" in body and "| stage2 |" in body and "Not evaluated yet" in body, body
    control = next(p for p in models.glob("control-stage2-*") if (p / "_artefact.json").is_file())
    assert "control" in read_card(control / "README.md")[0]["tags"]

    out = root / "card.md"
    assert main(["card", "--model", str(alignx), "--out", str(out)]) == 0
    header, body = read_card(out)
    docs = [json.loads(p.read_text()) for p in (root / "run" / "eval").glob("*/metrics.json")]
    results = {}
    for doc in docs:
        if Path(doc["model"]["path"]).resolve() == alignx.resolve():
            results.update(doc["results"])
    assert results, "no evaluation of the AlignX model under the run root"
    index = {r["dataset"]["name"]: {m["type"]: m for m in r["metrics"]} for r in header["model-index"][0]["results"]}
    assert set(index) == set(results), (set(index), set(results))
    for task, metrics in index.items():
        for metric, entry in metrics.items():
            assert entry["value"] == pytest.approx(results[task][metric], abs=1e-4), (task, metric)
    chrf = index["flores_de-en"]["chrf_seg"]["name"]
    lo, hi = (float(x) for x in re.search(r"95% CI \[([-\d.e]+), ([-\d.e]+)\]", chrf).groups())
    assert lo <= results["flores_de-en"]["chrf_seg"] <= hi and lo < hi, chrf
    assert "| flores_de-en | chrF++ (segment mean) |" in body
    yaml.safe_load(out.read_text().split("---\n")[1])  # the header alone is valid YAML

    capsys.readouterr()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["publish", "--model", str(alignx), "--repo", "someone/alignx-smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "offline" in err[0] and "HF_HUB_OFFLINE" in err[0], err


def test_report_artifact_embeds_every_plot(tmp_path):
    """Plots travel inside the artifact as data URIs (the same bytes); one that cannot be read is named."""
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flows.pipeline import report_artifact_markdown

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "a.png")
    plt.close(fig)
    md = report_artifact_markdown({"report": "/r/report.md", "markdown": "## Tables\n",
                                   "plots": {"curves": str(tmp_path / "a.png"), "gone": str(tmp_path / "gone.png")}})
    encoded = re.search(r"!\[curves\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md).group(1)
    assert base64.b64decode(encoded) == (tmp_path / "a.png").read_bytes()
    assert "gone.png" in md and "not readable here" in md and "![gone]" not in md
    assert md.index("## Tables") < md.index("## Plots")
