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


def features80(expected: dict) -> dict:
    """The reference's 80 features under ml4ml's names: the reference names its two layers
    after their numbers (``conv8_max_sstv``), ml4ml by position from the output (its first
    layer is ``layer-2``, its last ``layer-1``: docs/measures.md, "Levels")."""
    layers = [key for key in expected["reference"] if key != "confidence"]
    renamed = {f"{layer}_": f"layer-{len(layers) - k}_" for k, layer in enumerate(layers)}
    return {next((new + name[len(old):] for old, new in renamed.items()
                  if name.startswith(old)), name): value
            for name, value in expected["features80"].items()}


def large_available() -> bool:
    return LARGE.is_dir()


def cases():
    """pytest params: every small case, and the large ones where they are beside the
    checkout."""
    return [pytest.param(c, id=c) for c in SMALL_CASES + (LARGE_CASES if large_available()
                                                          else ())]


def drifting_store(folder: Path, mids, drift, case: str = "small1") -> Path:
    """A measured store ``folder/db.zarr`` of models imported from ``case``'s responses,
    each model's confidence scaled by ``1 - drift(k, mid) * |parameter|`` (less sure away
    from the identity; drift 0: as sure everywhere) and 1% seeded noise; labels.csv of
    ``mid,label`` is the caller's."""
    import gzip
    import io

    import numpy as np
    from click.testing import CliRunner

    from ml4ml.cli import cli

    def run(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    with gzip.open(results(case)) as file:
        responses = np.load(io.BytesIO(file.read()))
    path = folder / "db.zarr"
    rng = np.random.default_rng(0)
    params = responses[:, 0, 4]
    for k, mid in enumerate(mids):
        mine = responses.copy()
        mine[..., 3] *= (1 - drift(k, mid) * np.abs(params))[:, None]
        mine[..., 3] = np.clip(mine[..., 3] * (1 + 0.01 * rng.standard_normal(
            mine.shape[:2])), 0, 1)
        file = folder / f"{mid}_results.npy"
        np.save(file, mine)
        result = run("import-legacy", path, "--mid", mid, "--results", file, "--act",
                     act(case))
        assert result.exit_code == 0, result.output
    assert run("measure", path, "-q").exit_code == 0
    return path
