"""Ctrl-C as a terminal sends it: a real SIGINT to the whole process group of ``ml4ml run``
on a local cluster of 2 workers, once its progress shows the cluster has finished a model.

One line (what is safe, how to resume), exit 130, no worker traceback or warning; the same
command then resumes and finishes.
"""

import os
import re
import signal
import subprocess
import sys

from processes import ml4ml
from test_run_cli import SPEC as TINY

# the run commands' three-model spec, with a short assessment
SPEC = TINY.replace('name = "tiny"', 'name = "interrupted"') + "[assess]\nrepeats = 2\n"

TRIGGER = "train: 1/3 model(s)"  # the progress line of the first model the cluster trained


def test_ctrl_c_on_a_local_cluster_is_one_line_exit_130_and_resumes(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    process = subprocess.Popen([sys.executable, "-m", "ml4ml", "run", str(spec),
                                "--workers", "2"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith(TRIGGER):
                os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole group, workers too
                break
        lines += process.stdout.read().splitlines(keepends=True)
        code = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = "".join(lines)
    assert any(line.startswith(TRIGGER) for line in lines), output
    assert code == 130, output
    assert "Traceback" not in output and "Worker process still alive" not in output
    assert not any(word in output for word in ("WARNING", "ERROR", "Exception")), output
    after = lines[[k for k, line in enumerate(lines) if line.startswith(TRIGGER)][0] + 1:]
    # the second worker may report its model before the signal lands: progress lines, then
    # the one line of the interruption, last
    assert after[-1] == ("interrupted: the store is consistent; run the same command again "
                         "to resume\n"), output
    assert all(re.match(r"(train|probe): ", line) for line in after[:-1]), output
    # the same command resumes: the model trained before Ctrl-C is not trained again
    again = ml4ml("run", spec, "--workers", "2", "-q", cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    trained = [line for line in again.stdout.splitlines() if line.startswith("train:")]
    match = re.match(r"train: 0 added, (\d) trained, (\d) already", trained[0])
    assert match and int(match[1]) + int(match[2]) == 3 and int(match[2]) >= 1, again.stdout
    assert ml4ml("store", "check", tmp_path / "db.zarr").stdout.endswith(": ok\n")
