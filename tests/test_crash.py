"""Crash-safe at every write: kill a stage after its k-th store write, for every k; resume.

In the spirit of SQLite's crash tests: ``crash_harness.py`` builds a small store up to a
stage, counts the W writes (store keys and checkpoint files) of an uninterrupted run of
that stage, then for every k = 1 .. W kills a fresh run of it right after write k
with SIGKILL, runs the same command again with no fault (for "assess": labels from the
recipe, then the assessment), and compares the store with the uninterrupted run's, array
by array and bitwise. Every row finished at the crash must still be done, with the same
values and chunk bytes. For measure this covers the matrix measures' ``value`` and the
response measures' ``response_value``, written in the same row task.

"remove" is ``remove-models`` of a rated model from the assessed store, killed after
every 3rd write (k = 1, 4, 7, ... and W: its writes are many): rerun after the crash, it
must finish, leave no temporary file or journal, and give the uninterrupted
removal's store (rows move up, so this comparison, not the finished rows', is the check).

``add-models`` (two models trained elsewhere, added to a trained store) and
``add-models-force`` (the same ids, other files, replaced with ``--force`` in a probed
store) are crashed the same way; after their rerun ``store check`` finds nothing, no
temporary ``.partial`` file is left (``crash_harness.leftover_files``), and the rows equal
an uninterrupted run's.

Ctrl-C (a real SIGINT: KeyboardInterrupt, with every cleanup handler run) is tested the
same way after every 4th write for train, probe and the add-models stages (k = 1, 5, 9, ... and W) and every
8th for measure, assess and remove (k = 1, 9, 17, ... and W; their writes are many, and each k
reruns the stage twice): what it adds to SIGKILL is the cleanup on the way out, and
every cleanup context spans several writes, so each is still entered and left by a
Ctrl-C at several points; at every k it would add half again to the suite's longest
tests.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("crash_harness.py")
# remove-models rewrites every array of every group (200+ writes, each k a copy of the
# assessed store, a crash and a resume): SIGKILL after every 3rd write keeps it to minutes
KILL_EVERY = {"remove": 3}
INT_EVERY = {"train": 4, "probe": 4, "probe-units": 4, "measure": 8, "assess": 8, "remove": 8,
             "add-models": 4, "add-models-force": 4}


@pytest.mark.parametrize("signal_name", ["KILL", "INT"])
@pytest.mark.parametrize("stage", ["train", "probe", "measure", "add-models"])
def test_a_crash_after_any_write_resumes_to_the_uninterrupted_store(tmp_path, stage,
                                                                    signal_name):
    crash_and_resume(tmp_path, stage, signal_name)


def test_a_crash_while_probing_units_resumes_to_the_uninterrupted_store(tmp_path):
    """``[probe] units = "channel"``: the unit arrays, the driver's growth of the unit dim
    and the rows written after it, killed after every write."""
    crash_and_resume(tmp_path, "probe-units", "KILL")


def crash_and_resume(tmp_path, stage: str, signal_name: str) -> None:
    """Run the harness on ``stage`` with ``signal_name`` and check its report (the stages
    that start from an assessed or probed store: tests/test_crash_assessed.py)."""
    every = KILL_EVERY.get(stage, 1) if signal_name == "KILL" else INT_EVERY[stage]
    result = subprocess.run([sys.executable, str(HARNESS), str(tmp_path), signal_name, stage,
                             "2", str(every)], capture_output=True, text=True,
                            timeout=3600 if stage == "remove" else 900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["failures"] == []
    assert report["writes"] >= {"train": 60, "probe": 30, "probe-units": 30, "measure": 50,
                                "assess": 40,
                                "remove": 200, "add-models": 60, "add-models-force": 30}[stage]
    # every k (every 4th or 8th for Ctrl-C, and the last) crashed the run, and it resumed
    assert report["killed"] == len(set(range(1, report["writes"] + 1, every))
                                   | {report["writes"]})
    if stage != "train":
        assert report["finished_rows_checked"] > report["killed"]
    if stage == "measure":  # the response measures were compared bit for bit too
        assert "measures/digits/rotation/response_value" in report["arrays"]
        assert "measures/digits/rotation/response_measure" in report["arrays"]
