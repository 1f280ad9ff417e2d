"""The command line refuses a bad config before any work: no Prefect server, no data stage, no raw/ folder."""

from __future__ import annotations

from flows.cli import main


def test_align_layer_beyond_the_model_is_refused_before_the_data_stages(tmp_path, capsys):
    root = tmp_path / "run"
    code = main(["data", "--profile", "smoke", "--set", "stage1.align_layer=7", "--set", f"run_root={root}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "stage1.align_layer=7 is out of range for the bootstrap model, which has 2 layers" in err
    assert "Traceback" not in err
    assert not (root / "raw").exists() and not root.exists()


def test_every_config_problem_at_once(tmp_path, capsys):
    code = main(["train", "stage1", "--profile", "smoke", "--set", "stage1.tau=-1", "--set", "languages=[\"xx\"]",
                 "--set", f"run_root={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "stage1.tau" in err and "unknown language code" in err


def test_null_removes_a_mapping_key_and_sets_an_optional_field():
    from alignx.profiles import load_profile

    assert "xcopa" in load_profile("smoke").eval.limit
    cfg = load_profile("smoke", {"eval.limit.xcopa": None, "stage1.max_examples": None})
    assert "xcopa" not in cfg.eval.limit and cfg.eval.limit  # the other limits stay
    assert cfg.stage1.max_examples is None


def test_eval_names_its_output_after_the_checkpoint(tmp_path, capsys):
    from flows.cli import _eval_name

    assert _eval_name(tmp_path / "control-stage1-0123456789abcdef") == "control-stage1"
    assert _eval_name(tmp_path / "SmolLM2 135M") == "SmolLM2-135M"
    code = main(["eval", "--profile", "smoke", "--model", str(tmp_path / "missing"), "--set", f"run_root={tmp_path}"])
    assert code == 2 and "not a checkpoint directory" in capsys.readouterr().err


def test_a_bad_argument_joins_the_config_problems(tmp_path, capsys):
    code = main(["train", "stage1", "--profile", "smoke", "--arm", "sft", "--set", "stage1.tau=-1",
                 "--set", f"run_root={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and "2 problem(s) before any work" in err, err
    assert "--arm: stage1 trains arm 'alignx' or 'control', not 'sft'" in err and "stage1.tau" in err
    assert not (tmp_path / "run").exists()
