"""The report over arms' eval directories: tables for every arm and benchmark, intervals, plots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alignx.artefacts import verify_artefact
from alignx.eval.report import ReportInputError, report_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _arm_with_xcopa_acc(source: Path, dest: Path, acc: float) -> Path:
    """A copy of an eval dir whose XCOPA items (and their means) are all right or all wrong."""
    shutil.copytree(source, dest)
    doc = json.loads((dest / "metrics.json").read_text())
    for task in ("xcopa_sw", "xcopa_zh"):
        path = dest / "items" / f"{task}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "acc": acc}) + "\n" for r in rows))
        doc["results"][task]["acc"] = acc
    doc["groups"]["xcopa"]["acc"] = acc
    (dest / "metrics.json").write_text(json.dumps(doc))
    return dest


@pytest.fixture(scope="module")
def report(evaluated, tmp_path_factory):
    art, _, cfg = evaluated
    tmp = tmp_path_factory.mktemp("report")
    base = Path(art.path)
    arms = {
        "base": base,
        "sft": base,
        "control": _arm_with_xcopa_acc(base, tmp / "control", 0.0),
        "alignx": _arm_with_xcopa_acc(base, tmp / "alignx", 1.0),
    }
    log = tmp / "train_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 5 - s / 10, "lm": 4 - s / 10, "ctr": 1.2, "lam": 0.7}) + "\n"
                           for s in range(1, 30)))
    curves = {"alignx": log, "control": log}
    return write_report(arms, cfg, tmp / "out", curves=curves), arms, cfg


def _table(markdown: str, section: str, metric: str) -> list[list[str]]:
    part = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = part.split(f"| {metric} |", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def test_tables_have_numbers_for_every_arm_and_benchmark(report):
    art, arms, _ = report
    md = Path(art.meta["report"]).read_text()
    for section, metric, rows in [("xcopa", "acc", ["sw", "zh"]), ("xnli", "acc", ["de", "sw", "zh"]),
                                  ("belebele", "acc_norm", ["de", "sw", "zh"]), ("mgsm", "exact_match", ["de", "sw", "zh"]),
                                  ("flores_en-x", "chrf", ["en-de", "en-sw", "en-zh"]),
                                  ("align_flores_prompt", "x2en_top1", ["de", "sw", "zh"])]:
        table = _table(md, section, metric)
        assert [r[0] for r in table] == [*rows, "**average**"], section
        for row in table:
            assert len(row) == 1 + len(arms)
            assert all(float(cell) >= 0 for cell in row[1:]), (section, row)
    assert "| alignx − control |" in md and "| alignx − sft |" in md


def test_summary_says_whether_intervals_exclude_zero(report):
    art, _, _ = report
    summary = art.meta["summary"]
    xcopa = next(s for s in summary if s.startswith("alignx − control, xcopa acc"))
    assert "+1.000 [+1.000, +1.000]" in xcopa and "excludes zero (alignx better)" in xcopa
    same = next(s for s in summary if s.startswith("alignx − sft, mgsm exact_match"))
    assert "includes zero" in same
    assert any(s.startswith("alignx − control, align_flores_prompt x2en_top1") for s in summary)
    assert "## Summary" in art.meta["markdown"] and "![" not in art.meta["markdown"]


def test_plots_are_written(report):
    art, _, _ = report
    plots = Path(art.path) / "plots"
    names = {p.name for p in plots.glob("*.png")}
    assert {"alignment_flores.png", "bars_xcopa.png", "bars_flores_en-x.png", "training_curves.png"} <= names
    assert all((plots / n).read_bytes()[:8] == PNG_MAGIC for n in names)
    md = Path(art.meta["report"]).read_text()
    assert "(plots/alignment_flores.png)" in md
    assert verify_artefact(art) and art.kind == "report"


def test_report_markdown_without_writing(report):
    _, arms, cfg = report
    text = report_markdown(arms, cfg)
    assert text.startswith("# AlignX evaluation report") and "## xcopa" in text


def test_bad_inputs_are_named(report, tmp_path):
    _, arms, cfg = report
    with pytest.raises(ReportInputError, match=r"arm 'ghost': no metrics.json in .*nowhere"):
        write_report({**arms, "ghost": tmp_path / "nowhere"}, cfg, tmp_path / "out")
    bad_log = tmp_path / "log.jsonl"
    bad_log.write_text('{"step": 1, "loss": 2}\nnot json\n')
    with pytest.raises(ValueError, match=r"log\.jsonl line 2"):
        write_report(arms, cfg, tmp_path / "out2", curves={"alignx": bad_log})
    assert not (tmp_path / "out2").exists()
    broken = _arm_with_xcopa_acc(arms["base"], tmp_path / "broken", 0.5)
    items = broken / "items" / "xcopa_zh.jsonl"
    items.write_text(items.read_text().splitlines()[0] + '\n{"acc": 1.0}\n')
    with pytest.raises(ReportInputError, match=r"xcopa_zh\.jsonl line 2: expected a per-item object with 'doc_id'"):
        write_report({**arms, "alignx": broken}, cfg, tmp_path / "out3")
    assert not (tmp_path / "out3").exists()


def test_training_curves_have_a_row_per_stage_and_only_the_parts_it_trained():
    from alignx.eval.plots import training_curves_figure

    def log(steps, ctr, lam):
        return [{"step": s, "loss": 4.0 - s / 10 + 0.3 * ctr + 0.4 * lam, "lm": 4.0 - s / 10, "ctr": ctr, "lam": lam}
                for s in range(1, steps + 1)]

    logs = {"base": log(30, 0.0, 0.0), "alignx-stage1": log(10, 1.5, 0.6), "control-stage1": log(10, 2.9, 0.7),
            "alignx": log(5, 0.0, 0.0), "control": log(5, 0.0, 0.0)}
    stages = {"base": "bootstrap", "alignx-stage1": "stage1", "control-stage1": "stage1", "alignx": "stage2",
              "control": "stage2"}
    fig = training_curves_figure(logs, stages)
    titles = [ax.get_title() for ax in fig.axes]
    # lm is drawn only where it differs from loss (stage 1); ctr and lam only where they are not 0
    assert titles == ["bootstrap: loss", "stage1: loss", "stage1: lm", "stage1: ctr", "stage1: lam", "stage2: loss"]
    stage1_ctr = fig.axes[titles.index("stage1: ctr")]
    assert sorted(line.get_label() for line in stage1_ctr.get_lines()) == ["alignx-stage1", "control-stage1"]
    # without stages every run shares one row
    assert [ax.get_title() for ax in training_curves_figure(logs).axes] == [
        "training: loss", "training: lm", "training: ctr", "training: lam"]


def test_summary_opens_with_one_downstream_verdict(report):
    art, _, _ = report
    verdict = art.meta["summary"][0]
    # AlignX's XCOPA items are all right and the control's all wrong; everything else is equal
    assert verdict.startswith("Downstream, AlignX helps: better on xcopa acc +1.000"), verdict
    assert "worse on none" in verdict


def test_downstream_verdict_weighs_only_intervals_that_exclude_zero():
    from alignx.eval.report import downstream_verdict

    rows = [("alignx", "control", "flores_x-en", "chrf_seg", 1.2, 0.4, 2.0),
            ("alignx", "control", "flores_en-x", "off_target", 0.10, 0.05, 0.15),  # more off-target: worse
            ("alignx", "control", "xcopa", "acc", 0.01, -0.03, 0.05),
            ("alignx", "sft", "flores_x-en", "chrf_seg", -3.0, -4.0, -2.0),  # another comparison: ignored
            ("alignx", "control", "align_flores_prompt", "x2en_top1", 0.2, 0.1, 0.3)]  # not downstream
    verdict = downstream_verdict(rows)
    # quality (chrF++, accuracy) decides; the off-target rate is stated beside it, never counted as quality
    assert verdict.startswith("Downstream, AlignX helps: better on flores_x-en chrf_seg +1.20"), verdict
    assert "worse on none of the 2 quality comparisons" in verdict
    assert "it answers in another language more often (flores_en-x off_target" in verdict
    assert downstream_verdict([r for r in rows if r[3] == "acc"]).startswith("Downstream, AlignX does not measurably help")
    assert downstream_verdict(rows[3:]) is None
    worse = [("alignx", "control", "xcopa", "acc", -0.05, -0.08, -0.02), rows[0]]
    assert downstream_verdict(worse).startswith("Downstream, AlignX is mixed: better on flores_x-en chrf_seg")


def test_an_off_target_drop_alone_is_not_called_help():
    """Fewer wrong-language answers with chrF++ unchanged (the development sweep's baseline point) is not
    a downstream gain: the verdict says quality did not move and names the off-target change apart."""
    from alignx.eval.report import downstream_verdict

    rows = [("alignx", "control", "ntrex_x-en", "chrf_seg", 0.04, -0.56, 0.62),
            ("alignx", "control", "ntrex_en-x", "chrf_seg", -0.29, -0.88, 0.32),
            ("alignx", "control", "ntrex_en-x", "off_target", -0.067, -0.097, -0.033),
            ("alignx", "control", "ntrex_x-en", "off_target", 0.0, -0.013, 0.013)]
    verdict = downstream_verdict(rows)
    assert verdict.startswith("Downstream, AlignX does not measurably help: none of the 2 quality comparisons"), verdict
    assert verdict.endswith("; it answers in the requested language more often (ntrex_en-x off_target -0.067 [-0.097, -0.033])."), verdict
    assert "helps:" not in verdict
    only_language = downstream_verdict(rows[2:])
    assert only_language.startswith("Downstream quality was not compared"), only_language
