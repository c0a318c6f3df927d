"""The reference's golden vectors: three small cases in the checkout, three large beside it.

``tests/data/golden/`` holds small1..small3 (copied from ``../shared/golden-small``, file
names unchanged; their README says what they are), so parity runs in a fresh clone. The
large cases case1..case3 are an extra: read from ``../shared/golden/`` (never copied into
the project, as their README asks) and tested when that folder is there; in a clone with
nothing beside it they are not among the tests at all, and pytest's header says so.
"""

from pathlib import Path

import pytest

SMALL = Path(__file__).resolve().parent / "data" / "golden"
LARGE = Path(__file__).resolve().parents[2] / "shared" / "golden"
SMALL_CASES = ("small1", "small2", "small3")
LARGE_CASES = ("case1", "case2", "case3")


def folder(case: str) -> Path:
    return SMALL if case.startswith("small") else LARGE


def results(case: str) -> Path:
    return folder(case) / f"{case}_results.npy.gz"


def act(case: str) -> Path:
    return folder(case) / f"{case}_actoverall.npy.gz"


def expected(case: str) -> Path:
    return folder(case) / f"{case}.json"


def large_available() -> bool:
    return LARGE.is_dir()


def cases():
    """pytest params: every small case, and the large ones where they are beside the
    checkout."""
    return [pytest.param(c, id=c) for c in SMALL_CASES + (LARGE_CASES if large_available()
                                                          else ())]
