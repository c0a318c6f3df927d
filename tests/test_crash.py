"""Crash-safe at every write: kill a stage after its k-th store write, for every k; resume.

In the spirit of SQLite's crash tests: ``crash_harness.py`` builds a small store up to a
stage, counts the W writes (store keys and checkpoint files) of an uninterrupted run of
that stage, then for every k = 1 .. W kills a fresh run of it right after write k
(SIGKILL, or a real SIGINT as Ctrl-C sends), runs the same command again with no fault,
(for "assess": labels from the recipe, then the assessment)
and compares the store with the uninterrupted run's, array by array and bitwise. Every row
finished at the crash must still be done, with the same values and chunk bytes.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("crash_harness.py")


@pytest.mark.parametrize("signal_name", ["KILL", "INT"])
@pytest.mark.parametrize("stage", ["train", "probe", "measure", "assess"])
def test_a_crash_after_any_write_resumes_to_the_uninterrupted_store(tmp_path, stage,
                                                                    signal_name):
    result = subprocess.run([sys.executable, str(HARNESS), str(tmp_path), signal_name, stage],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["failures"] == []
    assert report["writes"] >= {"train": 60, "probe": 30, "measure": 50, "assess": 40}[stage]
    assert report["killed"] == report["writes"]  # every k crashed the run, and resumed
    if stage != "train":
        assert report["finished_rows_checked"] > report["writes"]
