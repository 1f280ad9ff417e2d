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


def test_the_table_shows_every_point_and_applies_the_aim_to_the_development_figures(tmp_path: Path):
    from bench.real_sweep import read_points, results_table

    def figure(delta, lo, hi):
        return {"delta": delta, "ci": [lo, hi]}

    good = {"point": "lambda_ctr=3", "rc": 0, "wall_min": 80.0,
            "ntrex_x-en chrf_seg": figure(1.2, 0.3, 2.0), "ntrex_en-x chrf_seg": figure(-0.1, -0.4, 0.3),
            "ntrex_en-x off_target": figure(0.01, -0.02, 0.04),
            "align_ntrex_prompt x2en_top1": figure(0.15, 0.12, 0.18), "align_ntrex_prompt en2x_top1": figure(0.2, 0.1, 0.3)}
    en2x_worse = {**good, "point": "lambda_ctr=10", "ntrex_en-x chrf_seg": figure(-0.9, -1.6, -0.3)}
    failed = {"point": "steps=400", "rc": 1, "wall_min": 3.0}
    results = tmp_path / "results.jsonl"
    # the first lambda_ctr=3 line (a run later repeated) is replaced by the latest
    lines = [{**good, "ntrex_x-en chrf_seg": figure(0.1, -0.5, 0.7)}, good, en2x_worse, failed]
    results.write_text("\n".join(json.dumps(p) for p in lines) + "\n")
    rows = {line.split(" | ")[0].strip("| "): line for line in results_table(read_points(results)).splitlines()[2:]}
    assert list(rows) == ["lambda_ctr=3", "lambda_ctr=10", "steps=400"]
    assert "+1.20 [+0.30, +2.00]" in rows["lambda_ctr=3"] and "+15.00 [+12.00, +18.00]" in rows["lambda_ctr=3"]
    assert rows["lambda_ctr=3"].endswith("| yes | 80.0 |")
    assert rows["lambda_ctr=10"].endswith("| no | 80.0 |")  # en->X lower bound below -0.5
    assert "(exit 1)" in rows["steps=400"] and rows["steps=400"].endswith("| no | 3.0 |")

    results.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"results.jsonl: line 2 is not a sweep point"):
        read_points(results)


def test_a_point_run_again_keeps_the_log_of_its_stopped_attempt(tmp_path: Path, monkeypatch):
    """A stopped point resumes from its checkpoints when run again; its log keeps both attempts."""
    import subprocess

    import bench.real_sweep as sweep

    progress = iter(["stage 1 (alignx): 20/80\n", "stage 1 (alignx): 40/80\n"])

    def fake_run(cmd, stdout, **kwargs):
        stdout.write(next(progress))
        return subprocess.CompletedProcess(cmd, -9)

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    logs = tmp_path / "sweep-logs"
    logs.mkdir()
    first = sweep.run_point("baseline", sweep.PROFILE, tmp_path, logs)
    second = sweep.run_point("baseline", sweep.PROFILE, tmp_path, logs)
    text = (logs / "baseline.log").read_text()
    assert "20/80" in text and "40/80" in text and text.index("20/80") < text.index("40/80")
    assert (first["attempt"], second["attempt"]) == (1, 2)
    (tmp_path / "results.jsonl").write_text(json.dumps(second) + "\n")
    assert "(the last of 2 attempts)" in sweep.results_table(sweep.read_points(tmp_path / "results.jsonl"))


def test_the_test_set_is_read_once_for_a_point_chosen_on_the_development_set(tmp_path: Path, monkeypatch):
    """--final runs the profile's own evaluation (FLORES) for a point that has development figures, records
    the choice first, resumes the same point, and refuses another one unless a reason is given."""
    import subprocess

    import bench.real_sweep as sweep

    ran: list[list[str]] = []

    def fake_run(cmd, stdout, **kwargs):
        ran.append(cmd)
        stdout.write(f"report: {tmp_path}/report/report.md\n")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    monkeypatch.setattr(sweep, "RECORD_DIR", tmp_path / "record")
    logs = tmp_path / "sweep-logs"
    logs.mkdir()
    dev = {"delta": 0.77, "ci": [0.02, 1.48]}
    points = [{"point": "baseline", "rc": 0, "report": "r0", "ntrex_x-en chrf_seg": dev},
              {"point": "lambda_ctr=3", "rc": 0, "report": "r1", "ntrex_x-en chrf_seg": dev},
              {"point": "steps=400", "rc": 1}]
    (logs / "results.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))

    for unknown in ("layer=22", "steps=400"):  # never run, or failed: no development figures to choose on
        with pytest.raises(ProtocolError, match="no development figures"):
            sweep.run_final(unknown, PROFILE, tmp_path, logs, None)
    assert not ran and not (logs / "final.json").exists()

    done = sweep.run_final("lambda_ctr=3", PROFILE, tmp_path, logs, None)
    assert done["rc"] == 0 and done["report"] == f"{tmp_path}/report/report.md"
    sets = [arg for arg in ran[0] if arg.startswith(("eval.", "arms=", "stage1."))]
    # the profile's evaluation (FLORES, XCOPA, every arm), not NTREX's; only its batch is the development one's
    assert sets == ["eval.batch_size=64", "stage1.lambda_ctr=3.0"]
    choice = json.loads((logs / "final.json").read_text())["choices"]
    assert [c["point"] for c in choice] == ["lambda_ctr=3"] and choice[0]["dev"]["ntrex_x-en chrf_seg"] == dev
    assert choice[0]["points_known"] == ["baseline", "lambda_ctr=3", "steps=400"]
    assert choice[0]["eval"] == {"eval.batch_size": "64"}

    sweep.run_final("lambda_ctr=3", PROFILE, tmp_path, logs, None)  # the same point again: it resumes
    with pytest.raises(ProtocolError, match="already read for 'lambda_ctr=3'"):
        sweep.run_final("baseline", PROFILE, tmp_path, logs, None)
    assert len(ran) == 2
    sweep.run_final("baseline", PROFILE, tmp_path, logs, "the first final ran on a broken checkout")
    choice = json.loads((logs / "final.json").read_text())["choices"]
    assert [(c["point"], c["reason"]) for c in choice] == [
        ("lambda_ctr=3", None), ("baseline", "the first final ran on a broken checkout")]


def test_the_committed_record_keeps_the_points_and_the_reading_of_the_test_across_machines(tmp_path: Path, monkeypatch):
    """A new machine starts with an empty run root: the points tried and the final's choice come from the
    committed record, so the table still shows them and a second point is still refused."""
    import subprocess

    import bench.real_sweep as sweep

    monkeypatch.setattr(sweep.subprocess, "run", lambda cmd, stdout, **kw: subprocess.CompletedProcess(cmd, 0))
    record = tmp_path / "record"
    monkeypatch.setattr(sweep, "RECORD_DIR", record)
    dev = {"delta": 0.06, "ci": [-0.47, 0.61]}
    old_machine, new_machine = tmp_path / "old" / "sweep-logs", tmp_path / "new" / "sweep-logs"
    # a point run on the old machine goes to its run root and to the record
    sweep.record_point({"point": "stage2_steps=160", "rc": 0, "ntrex_x-en chrf_seg": dev}, old_machine)
    # one transcribed by hand (no report path: its run root is gone) is a point with figures too
    with (record / "points.jsonl").open("a") as f:
        f.write(json.dumps({"point": "baseline", "rc": 0, "ntrex_x-en chrf_seg": dev, "transcribed_from": "README"}) + "\n")
    new_machine.mkdir(parents=True)
    (new_machine / "results.jsonl").write_text(json.dumps({"point": "layer=22", "rc": 1}) + "\n")
    assert list(sweep.known_points(new_machine)) == ["stage2_steps=160", "baseline", "layer=22"]
    table = sweep.results_table(sweep.known_points(new_machine))
    assert "+0.06 [-0.47, +0.61]" in table and "(exit 1)" in table

    with pytest.raises(ProtocolError, match="no development figures"):  # failed on the new machine
        sweep.run_final("layer=22", PROFILE, tmp_path / "new", new_machine, None)
    sweep.run_final("baseline", PROFILE, tmp_path / "old", old_machine, None)
    assert json.loads((record / "final.json").read_text())["choices"][0]["point"] == "baseline"
    with pytest.raises(ProtocolError, match="already read for 'baseline'"):  # the new run root has no final.json
        sweep.run_final("stage2_steps=160", PROFILE, tmp_path / "new", new_machine, None)
    sweep.run_final("baseline", PROFILE, tmp_path / "new", new_machine, None)  # the same point resumes
    assert [c["point"] for c in json.loads((new_machine / "final.json").read_text())["choices"]] == ["baseline"]

    (record / "final.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"final.json: not a record of final reports"):
        sweep.run_final("baseline", PROFILE, tmp_path / "new", new_machine, None)


def test_final_auto_applies_the_stated_rule_to_the_development_figures(tmp_path: Path, monkeypatch):
    import subprocess

    import bench.real_sweep as sweep

    def point(name, x2en, en2x, lo=0.1, rc=0):
        return {"point": name, "rc": rc, "ntrex_x-en chrf_seg": {"delta": x2en, "ci": [lo, x2en + 0.5]},
                "ntrex_en-x chrf_seg": {"delta": en2x, "ci": [en2x - 0.3, en2x + 0.3]},
                "align_ntrex_prompt x2en_top1": {"delta": 0.1, "ci": [0.05, 0.15]},
                "align_ntrex_prompt en2x_top1": {"delta": 0.1, "ci": [0.05, 0.15]}}

    none_met = {p["point"]: p for p in [point("baseline", 0.04, -0.29, lo=-0.5), point("lambda_ctr=3", 0.77, -0.92),
                                        point("stage2_steps=160", 0.06, 0.14, lo=-0.5),
                                        point("steps=400", 3.0, 3.0, rc=1)]}  # failed: no say
    assert sweep.choose_final(none_met) == "stage2_steps=160"  # the best mean of both directions
    met = {**none_met, "layer=22": point("layer=22", 1.1, -0.1), "steps=400": point("steps=400", 1.5, 0.0)}
    assert sweep.choose_final(met) == "steps=400"  # meets the aim, with the highest X->en gain
    with pytest.raises(ProtocolError, match="no point has development figures"):
        sweep.choose_final({"steps=400": {"point": "steps=400", "rc": 1}})

    ran = []
    monkeypatch.setattr(sweep.subprocess, "run", lambda cmd, stdout, **kw: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    monkeypatch.setattr(sweep, "RECORD_DIR", tmp_path / "record")
    logs = tmp_path / "sweep-logs"
    logs.mkdir()
    (logs / "results.jsonl").write_text("".join(json.dumps(p) + "\n" for p in none_met.values()))
    assert sweep.run_final("auto", PROFILE, tmp_path, logs, None)["final"] == "stage2_steps=160"
    assert "stage2.train.steps=160" in ran[0]
    choice = json.loads((tmp_path / "record" / "final.json").read_text())["choices"]
    assert [c["point"] for c in choice] == ["stage2_steps=160"] and choice[0]["rule"] == sweep.RULE
