"""bench/quality.py as a user runs it: a source that is not there, or a profile that does not
load, is one line naming it, exit code 1, before any flow (or Prefect server) starts."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_POSTS = str(ROOT / "data" / "sample" / "posts")


@pytest.mark.parametrize(
    ("source", "profile", "said"),
    [
        ("no-such-folder", "quick", "no-such-folder' is no file or folder"),
        (SAMPLE_POSTS, "nope", "unknown profile 'nope'"),
        (SAMPLE_POSTS, "finetune:\n  stpes: 5\n", "finetune.stpes: Extra inputs are not"),
        (SAMPLE_POSTS, "finetune: [1\n", "not YAML"),
    ],
)
def test_a_bad_input_is_one_line(tmp_path, source: str, profile: str, said: str) -> None:
    data = tmp_path / "data"
    if "\n" in profile:  # a profile file's text
        (tmp_path / "bad.yaml").write_text(profile)
        profile = str(tmp_path / "bad.yaml")
    command = [sys.executable, str(ROOT / "bench" / "quality.py"), "--data-dir", str(data)]
    done = subprocess.run(
        [*command, "--source", source, "--profile", profile],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and said in lines[0], lines
    assert not data.exists()  # nothing ran
