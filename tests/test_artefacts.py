"""Atomic artefacts: a dead writer's temporaries are removed by the next writer, a live one's are kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alignx.artefacts import atomic_dir, atomic_write_text, remove_dead_temporaries

REPO = Path(__file__).resolve().parent.parent


def _killed_writer(final: Path) -> None:
    """A real process that starts writing ``final`` and is killed with SIGKILL mid-write."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from alignx.artefacts import atomic_dir\n"
        "with atomic_dir(Path(sys.argv[1])) as tmp:\n"
        "    (tmp / 'half.bin').write_bytes(b'x' * 10)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(final)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()


def test_next_writer_removes_a_killed_writers_temporary(tmp_path):
    final = tmp_path / "shards"
    _killed_writer(final)
    left = list(tmp_path.glob(".shards.tmp-*"))
    assert len(left) == 1 and (left[0] / "half.bin").is_file()
    with atomic_dir(final) as tmp:
        (tmp / "done.txt").write_text("ok")
    assert not list(tmp_path.glob(".shards.tmp-*")), "the dead writer's folder is still there"
    assert (final / "done.txt").read_text() == "ok" and not (final / "half.bin").exists()


def test_live_writers_temporary_is_kept(tmp_path):
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        # our own in-progress temporary (a live writer) must survive another writer's clean-up
        assert remove_dead_temporaries(final) == []
        assert tmp.is_dir()
        (tmp / "w.txt").write_text("w")
    assert (final / "w.txt").is_file()


def test_foreign_names_are_left_alone(tmp_path):
    final = tmp_path / "x.json"
    odd = tmp_path / ".x.json.tmp-notours"
    odd.write_text("?")
    atomic_write_text(final, "{}")
    assert odd.exists() and final.read_text() == "{}"


@pytest.mark.parametrize("name", ["a[b", "star*"])
def test_names_with_glob_characters(tmp_path, name):
    with atomic_dir(tmp_path / name) as tmp:
        (tmp / "f").write_text("1")
    assert (tmp_path / name / "f").read_text() == "1"
