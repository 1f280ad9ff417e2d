"""evaluate_model end to end on a tiny checkpoint: metrics.json layout, per-item files, errors up front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alignx.artefacts import verify_artefact
from alignx.eval.benchmarks import UnknownBenchmarkError, known_benchmarks
from alignx.eval.runner import EvalInputError, benchmark_fingerprint, evaluate_model

from .conftest import eval_config


def test_metrics_json_layout(evaluated):
    art, _, _ = evaluated
    out = Path(art.path)
    doc = json.loads((out / "metrics.json").read_text())
    results = doc["results"]
    assert set(results) >= {"xcopa_sw", "xcopa_zh", "xnli_de", "xnli_zh", "xnli_sw", "belebele_de", "mgsm_de",
                            "flores_en-de", "flores_zh-en", "align_flores_alone_de", "align_flores_prompt_sw"}
    assert "xcopa_de" not in results  # XCOPA has no German
    assert set(results["xcopa_sw"]) == {"acc", "acc_norm"}
    assert results["flores_en-sw"]["off_target"] is None and results["flores_en-de"]["off_target"] is not None
    assert set(results["flores_de-en"]) == {"bleu", "chrf", "chrf_seg", "off_target"}
    assert doc["n-samples"]["xcopa_sw"] == 8 and doc["n-samples"]["mgsm_zh"] == 2 and doc["n-samples"]["flores_en-zh"] == 4
    assert doc["n-samples"]["xnli_de"] == 4 and doc["n-samples"]["align_flores_prompt_de"] == 16
    assert doc["groups"]["xcopa"]["acc"] == pytest.approx((results["xcopa_sw"]["acc"] + results["xcopa_zh"]["acc"]) / 2)
    assert {"flores_en-x", "flores_x-en", "align_flores_alone", "align_flores_prompt"} <= set(doc["groups"])
    assert doc["tasks"]["flores_en-de"] == {"group": "flores_en-x", "label": "en-de"}
    layers = doc["num_layers"] + 1
    assert len(doc["alignment"]["flores"]["prompt"]["zh"]["x2en_top1"]) == layers
    assert doc["alignment_layer"] == 1  # the middle of 2 blocks
    assert doc["config"]["eval"]["benchmarks"] == ["xcopa", "xnli", "belebele", "mgsm", "flores"]


def test_per_item_files(evaluated):
    art, _, _ = evaluated
    items = Path(art.path) / "items"
    xcopa = [json.loads(line) for line in (items / "xcopa_sw.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in xcopa] == list(range(8))
    assert all(set(r) >= {"acc", "acc_norm", "loglikelihoods", "gold"} for r in xcopa)
    flores = [json.loads(line) for line in (items / "flores_en-de.jsonl").read_text().splitlines()]
    assert all(set(r) >= {"source", "reference", "hypothesis", "chrf_seg", "off_target"} for r in flores)
    align = json.loads((items / "align_flores_alone_zh.jsonl").read_text().splitlines()[0])
    assert len(align["x2en_top1"]) == 3 and len(align["cos_gap"]) == 3


def test_artefact_marker_and_progress(evaluated):
    art, calls, _ = evaluated
    assert art.kind == "eval" and verify_artefact(art)
    assert calls and calls[-1][0] == calls[-1][1]  # reaches the total
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls)
    assert {desc for _, _, desc in calls} >= {"xcopa_sw", "flores_en-de", "align_flores_prompt"}


def test_unknown_benchmark_fails_before_loading_the_model(tmp_path, eval_fixtures):
    cfg = eval_config(tmp_path, eval_fixtures, benchmarks=["xcopa", "xcopa2"])
    with pytest.raises(UnknownBenchmarkError) as err:
        evaluate_model(str(tmp_path / "no-model"), cfg, tmp_path / "out")
    assert "'xcopa2'" in str(err.value) and all(name in str(err.value) for name in known_benchmarks())
    assert not (tmp_path / "out").exists()


def test_missing_inputs_are_reported_together(tmp_path, eval_fixtures):
    cfg = eval_config(tmp_path, eval_fixtures, benchmarks=["xcopa", "xnli"], mgsm_shots=2,
                      data_files={"xnli": str(tmp_path / "absent" / "{code}.jsonl")})
    with pytest.raises(EvalInputError) as err:
        evaluate_model(str(tmp_path / "no-model"), cfg, tmp_path / "out")
    msg = str(err.value)
    assert str(tmp_path / "absent" / "de.jsonl") in msg and str(tmp_path / "absent" / "sw.jsonl") in msg
    assert len(err.value.problems) == 3  # de, zh, sw; mgsm is not requested so its shots are ignored


def test_malformed_benchmark_file_is_named(tmp_path, eval_fixtures):
    bad = tmp_path / "xnli"
    bad.mkdir()
    for code in ("de", "zh", "sw"):
        shutil.copy(eval_fixtures / "xnli" / f"{code}.validation.jsonl", bad / f"{code}.jsonl")
    (bad / "zh.jsonl").write_text('{"premise": "a", "label": 0}\n')
    cfg = eval_config(tmp_path, eval_fixtures, benchmarks=["xnli"], data_files={"xnli": str(bad / "{code}.jsonl")})
    with pytest.raises(EvalInputError, match=r"zh\.jsonl line 1: expected fields .*missing \['hypothesis'\]"):
        evaluate_model(str(tmp_path / "no-model"), cfg, tmp_path / "out")


def test_ntrex_alignment_refused_when_trained_on(tmp_path, eval_fixtures):
    cfg = eval_config(tmp_path, eval_fixtures, benchmarks=[], alignment={"sets": ["ntrex"]})
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"sources": ["tatoeba", "ntrex128"]})})
    with pytest.raises(EvalInputError, match="NTREX .* trains on it"):
        evaluate_model(str(tmp_path / "no-model"), cfg, tmp_path / "out")


def test_benchmark_fingerprint_follows_the_data(tmp_path, eval_fixtures):
    copy = tmp_path / "xnli"
    shutil.copytree(eval_fixtures / "xnli", copy)
    cfg = eval_config(tmp_path, eval_fixtures, benchmarks=["xcopa", "xnli"], data_files={"xnli": str(copy / "{code}.validation.jsonl")})
    first = benchmark_fingerprint(cfg)
    assert first == benchmark_fingerprint(cfg)
    (copy / "de.validation.jsonl").write_text((copy / "de.validation.jsonl").read_text()[:-2] + "\n")
    assert benchmark_fingerprint(cfg) != first
    assert benchmark_fingerprint(eval_config(tmp_path, eval_fixtures, benchmarks=["xcopa"])) != first


def test_mgsm_exemplars_are_read_and_checked(tmp_path, mirror, eval_fixtures):
    from alignx.eval.evaluation_plan import plan_evaluation

    good = tmp_path / "shots.tsv"
    good.write_text("Two apples and one more?\t3\nHalf of 5,000?\t2,500\n", encoding="utf-8")
    cfg = eval_config(tmp_path, eval_fixtures, benchmarks=["mgsm"], mgsm_shots=2, mgsm_exemplars=str(good), alignment={"sets": []})
    plan = plan_evaluation(cfg, mirror)
    assert plan.exemplars["mgsm"][1] == {"question": "Half of 5,000?", "answer_number": "2,500"}
    assert [u.task for u in plan.units] == ["mgsm_de", "mgsm_zh", "mgsm_sw"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("only a question\n", encoding="utf-8")
    cfg = eval_config(tmp_path, eval_fixtures, benchmarks=["mgsm"], mgsm_shots=1, mgsm_exemplars=str(bad), alignment={"sets": []})
    with pytest.raises(EvalInputError, match=r"bad\.tsv line 1: expected 2 tab-separated columns"):
        plan_evaluation(cfg, mirror)
    shots = tmp_path / "shots.jsonl"
    shots.write_text('{"question": "One plus one?", "answer": 2}\n{"question": "Two?", "answer_number": "2"}\n',
                     encoding="utf-8")
    cfg = eval_config(tmp_path, eval_fixtures, benchmarks=["mgsm"], mgsm_shots=2, mgsm_exemplars=str(shots), alignment={"sets": []})
    assert [row["answer_number"] for row in plan_evaluation(cfg, mirror).exemplars["mgsm"]] == [2, "2"]
    shots.write_text('{"question": "One plus one?", "answer": 2}\n{"question": \n', encoding="utf-8")
    with pytest.raises(EvalInputError, match=r"shots\.jsonl line 2: expected a JSON object, found invalid JSON"):
        plan_evaluation(cfg, mirror)


def test_bfloat16_evaluation_is_configurable_and_close_to_float32(tmp_path, tiny_lm_dir, eval_fixtures, evaluated):
    """eval.dtype: the model is evaluated in bfloat16 (as on a GPU); alignment pools in float32, so the
    cosine gaps stay close to the float32 run's, and the config it ran under is recorded."""
    import numpy as np
    import torch

    from alignx.eval.runner import eval_dtype, load_model

    assert eval_dtype("auto", "cpu") == torch.float32 and eval_dtype("bfloat16", "cpu") == torch.bfloat16
    model, _ = load_model(str(tiny_lm_dir), "cpu", "bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    cfg = eval_config(tmp_path, eval_fixtures, benchmarks=["xcopa"], dtype="bfloat16")
    doc = json.loads((Path(evaluate_model(str(tiny_lm_dir), cfg, tmp_path / "out").path) / "metrics.json").read_text())
    ref = json.loads((Path(evaluated[0].path) / "metrics.json").read_text())
    assert doc["config"]["eval"]["dtype"] == "bfloat16"
    got = np.array(doc["alignment"]["flores"]["prompt"]["zh"]["cos_gap"])
    want = np.array(ref["alignment"]["flores"]["prompt"]["zh"]["cos_gap"])
    assert got.shape == want.shape and not np.array_equal(got, want)  # it did run in another precision
    assert np.abs(got - want).max() < 0.05, (got, want)


def test_headline_metrics_are_tracked_in_tensorboard(evaluated):
    """The evaluation's group means land in TensorBoard as the run ``<profile>/eval-<folder>``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    art, _, cfg = evaluated
    doc = json.loads((Path(art.path) / "metrics.json").read_text())
    events = EventAccumulator(str(cfg.resolved_run_root() / "tracking" / "tensorboard" / "eval-test" / "eval-out")).Reload()
    expected = {f"{g}/{m}": v for g, metrics in doc["groups"].items() for m, v in metrics.items()}
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, value in expected.items():
        assert events.Scalars(tag)[0].value == pytest.approx(value, rel=1e-6, abs=1e-7), tag


class _Killed(Exception):
    """Stands for the process dying: nothing after it runs."""


def test_a_rerun_continues_an_evaluation_from_its_finished_tasks(tmp_path, tiny_lm_dir, eval_fixtures, evaluated,
                                                                monkeypatch, caplog):
    """An evaluation that dies in FLORES keeps the tasks it finished; the rerun into the same output runs
    only the rest, and writes what an uninterrupted evaluation writes. A part written under another key
    (a changed config) or unreadable is run again, and the parts are gone once the output is written."""
    from alignx.eval import alignment, runner, scoring
    from alignx.eval.finished_parts import parts_dir

    calls: dict[str, list] = {"choice": [], "generation": [], "translation": [], "alignment": []}
    align_once = alignment.evaluate_alignment

    def counted(kind, fn, die=None):
        def wrapped(*args, **kwargs):
            calls[kind].append(args)
            if die is not None and die(args):
                raise _Killed()
            return fn(*args, **kwargs)
        return wrapped

    def instrument(die_in_translation=None):
        for kind, name in (("choice", "evaluate_choice"), ("generation", "evaluate_generation")):
            monkeypatch.setattr(runner, name, counted(kind, getattr(scoring, name)))
        monkeypatch.setattr(runner, "evaluate_translation",
                            counted("translation", scoring.evaluate_translation, die_in_translation))
        monkeypatch.setattr(runner.align, "evaluate_alignment", counted("alignment", align_once))
        for v in calls.values():
            v.clear()

    cfg = eval_config(tmp_path, eval_fixtures)
    out = tmp_path / "out"
    instrument(die_in_translation=lambda args: (args[1], args[2]) == ("en", "zh"))  # dies in flores_en-zh
    with pytest.raises(_Killed):
        evaluate_model(str(tiny_lm_dir), cfg, out, progress=lambda *a: None)
    assert not out.exists()
    kept = sorted(p.stem for p in parts_dir(out).glob("*.json"))
    assert "xcopa_sw" in kept and "mgsm_zh" in kept and "flores_en-de" in kept and "flores_en-zh" not in kept
    n_translations, n_choice = len(calls["translation"]), len(calls["choice"])

    progress = []
    instrument()
    art = evaluate_model(str(tiny_lm_dir), cfg, out, progress=lambda d, t, desc: progress.append((d, t)))
    assert calls["choice"] == [] and calls["generation"] == []  # every finished task was read, none rerun
    assert len(calls["translation"]) == 6 - (n_translations - 1)  # 3 languages x 2 directions, less the finished
    assert len(calls["alignment"]) == 2  # alone and prompt
    assert [d for d, _ in progress] == sorted(d for d, _ in progress) and progress[-1][0] == progress[-1][1]
    assert not parts_dir(out).exists()

    ref_out = Path(evaluated[0].path)
    doc, ref = (json.loads((p / "metrics.json").read_text()) for p in (Path(art.path), ref_out))
    for field in ("results", "groups", "alignment", "tasks", "n-samples"):
        assert doc[field] == ref[field], field
    for items in (ref_out / "items").iterdir():
        assert (Path(art.path) / "items" / items.name).read_text() == items.read_text(), items.name

    # a part of another configuration, or a damaged one, is not read
    other = eval_config(tmp_path, eval_fixtures, bootstrap_resamples=100)
    instrument(die_in_translation=lambda args: True)
    with pytest.raises(_Killed):
        evaluate_model(str(tiny_lm_dir), other, out, progress=lambda *a: None)
    (parts_dir(out) / "xcopa_zh.json").write_text('{"key": ', encoding="utf-8")
    instrument(die_in_translation=lambda args: True)
    with pytest.raises(_Killed), caplog.at_level("WARNING"):
        evaluate_model(str(tiny_lm_dir), other, out, progress=lambda *a: None)
    assert [args[1] for args in calls["choice"] if args[0].name == "xcopa"] == ["zh"]  # only the damaged one ran again
    assert "xcopa_zh.json: unreadable finished task" in caplog.text
    instrument(die_in_translation=lambda args: True)
    with pytest.raises(_Killed):
        evaluate_model(str(tiny_lm_dir), cfg, out, progress=lambda *a: None)  # back to the first config
    assert len(calls["choice"]) == n_choice  # its parts were overwritten by the other configuration's
