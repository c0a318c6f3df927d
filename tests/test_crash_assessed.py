"""Crash-safe at every write (tests/test_crash.py), for the stages that start from a store
already assessed or probed: ``assess``, ``remove`` (``remove-models`` of a rated model)
and ``add-models-force`` (models replaced with ``--force`` in a probed store).

A file of their own so that a parallel run (``pytest -n 2 --dist loadfile``) puts them
beside the other crash tests rather than after them.
"""

import pytest

from test_crash import crash_and_resume


@pytest.mark.parametrize("signal_name", ["KILL", "INT"])
@pytest.mark.parametrize("stage", ["assess", "remove", "add-models-force"])
def test_a_crash_after_any_write_resumes_to_the_uninterrupted_store(tmp_path, stage,
                                                                    signal_name):
    crash_and_resume(tmp_path, stage, signal_name)
