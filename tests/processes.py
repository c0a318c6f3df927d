"""``ml4ml`` as a user runs it: a process of its own, for the tests that need one."""

import subprocess
import sys


def ml4ml(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """``python -m ml4ml ARGS...`` in ``cwd``; finished, with its output captured.

    env : variables to set for it, on top of this process's environment.
    """
    import os

    return subprocess.run([sys.executable, "-m", "ml4ml", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env} if env else None)
