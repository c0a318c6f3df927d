"""Parity with the reference implementation on the golden cases (relative error <= 1e-6).

The small cases are in the checkout (tests/data/golden); the large ones beside it are an
extra, tested when they are there (tests/golden.py).

Each case is read from the reference's own files with ``read_legacy``, measured through
``variance_matrices`` and ``measure_database``, and every number the reference computed
(every measure, split, interval, level) plus the 80 paper features is compared.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ml4ml import dims
from ml4ml.measure.feature_sets import paper80
from ml4ml.store.legacy import read_legacy
from ml4ml.measure.measures import measure_database

import golden

RTOL = 1e-6
# the reference's split names
SPLITS = {"corr": "correct", "incorr": "incorrect"}


@pytest.fixture(scope="module", params=golden.cases())
def golden_case(request):
    """(case name, measures dataset computed from the reference's inputs, reference json)."""
    case = request.param
    probe = read_legacy(golden.results(case), golden.act(case))
    probe = probe.expand_dims({dims.MID: [case]})
    database = measure_database(probe).compute()
    with open(golden.expected(case)) as stream:
        expected = json.load(stream)
    return case, database, expected


def _reference_entries(expected, levels):
    """Yield (level, reference measure dict) for the confidence and every layer statistic;
    ``levels``: the database's level coordinate (layers named by position from the
    output: the reference's first layer is layer-2, its last layer-1)."""
    prefixes = dims.prefixes_of_levels(levels)
    yield dims.CONFIDENCE_LEVEL, expected["reference"]["confidence"]["l2_dist"]
    layers = [key for key in expected["reference"] if key != "confidence"]  # layer order
    for layer_index, layer in enumerate(layers):
        for stat in dims.STATS:
            yield (dims.layer_level(prefixes[layer_index], stat),
                   expected["reference"][layer][stat]["l2_dist"])


def _flatten(reference):
    """Yield (our measure name, reference split name, list of values) of one level."""
    for name, by_split in reference.items():
        if name == "grad":
            for axis_name, by_stat in by_split.items():
                for stat, per_split in by_stat.items():
                    for split, values in per_split.items():
                        yield f"grad_{axis_name}_{stat}", split, values
        else:
            for split, values in by_split.items():
                yield name, split, values


def test_every_reference_number_matches(golden_case):
    case, database, expected = golden_case
    value = database[dims.VALUE].sel({dims.MID: case})
    n_params = expected["n_params"]
    n_intervals = max(n_params // 2 - 4, 1)
    assert value.sizes[dims.INTERVAL] == n_intervals
    checked = 0
    worst = 0.0
    for level, reference in _reference_entries(expected, database[dims.LEVEL].values):
        for name, split, values in _flatten(reference):
            got = value.sel({dims.LEVEL: level, dims.SPLIT: SPLITS[split], dims.MEASURE: name})
            got = got.values[: len(values)]
            if name == "sstv":
                assert len(values) == 1
                assert np.isnan(value.sel({dims.LEVEL: level, dims.SPLIT: SPLITS[split],
                                           dims.MEASURE: name}).values[1:]).all()
            else:
                assert len(values) == n_intervals, (level, name, split)
            np.testing.assert_allclose(
                got, values, rtol=RTOL, atol=0, err_msg=f"{case} {level} {split} {name}"
            )
            nonzero = np.asarray(values) != 0
            if nonzero.any():
                rel = np.abs(got[nonzero] - np.asarray(values)[nonzero]) / np.abs(
                    np.asarray(values)[nonzero]
                )
                worst = max(worst, float(rel.max()))
            checked += len(values)
    # 17 levels x 2 splits x (15 measures over K intervals + sstv), as the reference nests them
    assert checked == 17 * 2 * (15 * n_intervals + 1)
    print(f"{case}: {checked} reference numbers, max relative error {worst:.3g}")


def test_paper80_features_match(golden_case):
    case, database, expected = golden_case
    table = paper80(database)
    reference = golden.features80(expected)  # layers renamed by position
    assert list(table.columns) == [dims.MID] + list(reference)
    assert list(table[dims.MID]) == [case]
    np.testing.assert_allclose(
        table.iloc[0, 1:].to_numpy(dtype=float),
        np.array(list(reference.values()), dtype=float),
        rtol=RTOL,
        atol=0,
    )
