"""One preflight before any work: every stage's input problems reported at once, by the pipeline and by
``alignx check``."""

from __future__ import annotations

import json

import pytest

from alignx.preflight import PreflightError, preflight, preflight_problems, profile_problems
from alignx.profiles import load_profile
from flows.cli import main
from tests.flows.conftest import copy_mirror


@pytest.fixture()
def broken(tmp_path, mirror):
    """A mirror copy with a Tatoeba file gone and a benchmark file that is a directory, plus an
    instruction file with a bad line: three stages' problems, none found by config validation."""
    local = copy_mirror(mirror, tmp_path / "mirror", ["deu-eng", "eng-zho", "eng-swa"], ["flores200", "xcopa", "mgsm"])
    (local / "tatoeba" / "eng-zho" / "tatoeba.eng-zho.zho").unlink()
    bench = local / "xcopa" / "val.sw.jsonl"
    bench.unlink()
    bench.mkdir()
    general = tmp_path / "general.jsonl"
    general.write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n{not json\n", encoding="utf-8")
    overrides = {"run_root": str(tmp_path / "run"), "data_mirror": str(local),
                 "stage2.general": [{"path": str(general), "language": "en"}]}
    return overrides, local, general


def test_a_good_profile_has_no_problems(mirror, tmp_path):
    assert preflight_problems(load_profile("smoke", {"run_root": str(tmp_path / "run")})) == []


def test_every_problem_at_once_naming_file_and_line(broken):
    overrides, local, general = broken
    problems = preflight_problems(load_profile("smoke", overrides))
    text = "\n".join(problems)
    assert "data source 'tatoeba'" in text and "tatoeba.eng-zho.zho" in text, text
    assert f"{general} line 2" in text, text
    assert "val.sw.jsonl" in text, text
    assert len(problems) == 3, text
    with pytest.raises(PreflightError) as err:
        preflight(load_profile("smoke", overrides))
    assert err.value.problems == problems


def test_base_model_problems_are_found_without_reading_weights(tmp_path):
    truncated = tmp_path / "model.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00")  # a header cut short
    cfg = load_profile("smoke", {"run_root": str(tmp_path / "run")}).model_copy(update={"base_model": str(truncated)})
    problems = preflight_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith(f"base_model {str(truncated)!r}") and "model.gguf" in problems[0]


def test_alignx_check_runs_it_alone(broken, capsys):
    overrides, _, _ = broken
    args = ["check", "--profile", "smoke"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("problem: ") == 3 and "nothing was run" in err and "Traceback" not in err
    assert not (load_profile("smoke", overrides).resolved_run_root() / "raw").exists()


def test_alignx_check_reports_config_and_input_problems_together(capsys):
    """The align layer (the model's depth) and an unknown benchmark (the registry): one report."""
    code = main(["check", "--profile", "smoke", "--set", "stage1.align_layer=99", "--set", 'eval.benchmarks=["nope"]'])
    err = capsys.readouterr().err
    assert code == 1 and err.count("problem: ") == 2, err
    assert "stage1.align_layer=99 is out of range for the bootstrap model, which has 2 layers" in err
    assert "eval.benchmarks: unknown benchmark(s) 'nope'; known benchmarks: belebele, flores, mgsm" in err


def test_an_invalid_key_does_not_hide_missing_inputs(broken, tmp_path, capsys):
    overrides, local, general = broken
    overrides = {**overrides, "stage1.tau": -1, "base_model": str(tmp_path / "absent.gguf")}
    cfg, problems = profile_problems("smoke", overrides)
    text = "\n".join(problems)
    assert cfg is not None and cfg.stage1.tau == 0.1  # the invalid key at its default, the rest as given
    assert problems[0] == "stage1.tau: Input should be greater than 0 (found -1)", text
    assert f"GGUF file {tmp_path / 'absent.gguf'} does not exist" in text
    assert "tatoeba.eng-zho.zho" in text and f"{general} line 2" in text and "val.sw.jsonl" in text, text
    assert len(problems) == 5, text

    # a command that runs work refuses with the same list, limited to the stages it runs, before any work
    args = ["data", "--profile", "smoke"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "stage1.tau: Input should be greater than 0" in err and "tatoeba.eng-zho.zho" in err, err
    assert "val.sw.jsonl" not in err and "absent.gguf" not in err  # evaluation and base model: not the data stage's
    assert not load_profile("smoke", {k: v for k, v in overrides.items() if k != "stage1.tau"}).resolved_run_root().exists()


def test_checks_that_read_an_invalid_key_are_left_out(broken):
    """languages=["xx"]: checking each source's files for the default languages would only add noise."""
    overrides, _, _ = broken
    cfg, problems = profile_problems("smoke", {**overrides, "languages": ["xx"], "eval.benchmarks": ["nope"]})
    text = "\n".join(problems)
    assert problems[0].startswith("languages: Value error, unknown language code(s) ['xx']; known: ar, bg, bn"), text
    assert "tatoeba" not in text and "val.sw.jsonl" not in text, text  # they read the languages
    assert "unknown benchmark(s) 'nope'" in text and "line 2" in text, text  # these do not
    assert len(problems) == 3, text
