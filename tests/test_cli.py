"""The command line refuses a bad config before any work: no Prefect server, no data stage, no raw/ folder."""

from __future__ import annotations

from alignx.cli import main


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
