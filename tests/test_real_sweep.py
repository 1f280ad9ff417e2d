"""The sweep scores on the development set only: a point that would read the report's test sets, or
score on data it trains on, is refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignx.profiles import load_profile
from bench.real_sweep import POINTS, PROFILE, ProtocolError, check_protocol, point_config, point_overrides


def test_every_stated_point_scores_on_the_development_set_only(tmp_path: Path):
    report = load_profile(PROFILE)
    assert {"flores"} <= set(report.eval.benchmarks) and report.eval.alignment.sets == ["flores"]
    for name in POINTS:
        cfg = point_config(PROFILE, point_overrides(name, tmp_path))
        check_protocol(report, cfg)  # does not raise
        assert cfg.eval.benchmarks == ["ntrex"] and cfg.eval.alignment.sets == ["ntrex"]


@pytest.mark.parametrize("override, refused", [
    ({"eval.benchmarks": '["ntrex", "flores"]'}, "['flores'], which the report"),
    ({"eval.alignment.sets": '["flores"]'}, "['flores'], which the report"),
    ({"eval.benchmarks": '["xcopa"]'}, "['xcopa'], which the report"),
    ({"data.sources": '["tatoeba", "ntrex128"]'}, "['ntrex'], which its training reads"),
])
def test_a_point_on_the_test_set_or_on_its_training_data_is_refused(tmp_path: Path, override, refused):
    overrides = {**point_overrides("baseline", tmp_path), **override}
    with pytest.raises(ProtocolError, match=refused.replace("[", r"\[").replace("]", r"\]")):
        check_protocol(load_profile(PROFILE), point_config(PROFILE, overrides))


def test_the_sweep_refuses_before_running_anything(tmp_path: Path, monkeypatch):
    import bench.real_sweep as sweep

    monkeypatch.setitem(sweep.POINTS, "on-test", {"eval.alignment.sets": json.dumps(["flores", "ntrex"])})
    ran = []
    monkeypatch.setattr(sweep.subprocess, "run", lambda *a, **k: ran.append(a))
    monkeypatch.setattr("sys.argv", ["real_sweep", "--points", "baseline", "on-test", "--run-root", str(tmp_path)])
    with pytest.raises(ProtocolError, match="flores"):
        sweep.main()
    assert not ran and not (tmp_path / "sweep-logs").exists()
