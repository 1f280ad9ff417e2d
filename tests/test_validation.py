"""Field-by-field validation: every error in the config's own keys, and the rest of the config kept."""

from __future__ import annotations

from alignx.config import PipelineConfig
from alignx.profiles import check_config


def test_errors_name_the_key_what_was_expected_and_what_was_found():
    checked = check_config({"name": "t", "stage1": {"align_layer": "top", "tau": -1}, "launch": {"processes": 0},
                            "languages": ["de", 3], "stage2": {"general": [{"path": "a.jsonl", "hub": "x/y"}]}})
    assert checked.problems == [
        "languages.1: Input should be a valid string (found 3)",
        "stage1.align_layer: Input should be a valid integer, unable to parse string as an integer; "
        "or Input should be 'middle' (found 'top')",  # a union's alternatives on its key's one line
        "stage1.tau: Input should be greater than 0 (found -1)",
        "stage2.general.0: Value error, give exactly one of 'path' or 'hub'",
        "launch.processes: Input should be greater than or equal to 1; or Input should be 'gpus' (found 0)",
    ]
    # the invalid fields fall back to their defaults (a bad list item: the whole list); the rest is kept
    assert checked.invalid == {"languages", "stage1.align_layer", "stage1.tau", "stage2.general", "launch.processes"}
    cfg = checked.config
    assert cfg is not None and cfg.languages == PipelineConfig.model_fields["languages"].default
    assert cfg.stage1.align_layer == "middle" and cfg.name == "t"


def test_a_rule_over_two_fields_is_checked_once_both_are_readable():
    """stage2 is invalid in the first pass, so the arms rule that reads it runs in the second."""
    checked = check_config({"name": "t", "arms": ["base", "sft"],
                            "stage2": {"enabled": False, "general": [{"paht": "a.jsonl"}]}})
    assert checked.problems == [
        "stage2.general.0.paht: Extra inputs are not permitted (found 'a.jsonl')",
        "arms: Value error, arm 'sft' is stage 2 from base: it needs stage2.enabled true (or leave 'sft' out of arms)",
    ]


def test_a_default_that_does_not_fit_the_given_neighbours_is_not_reported():
    """micro_batch_size=0 falls back to 8, which 12 is not a multiple of: not the user's problem."""
    checked = check_config({"name": "t", "stage1": {"train": {"micro_batch_size": 0, "global_batch_size": 12}}})
    assert checked.problems == ["stage1.train.micro_batch_size: Input should be greater than or equal to 1 (found 0)"]
