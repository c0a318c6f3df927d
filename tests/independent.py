"""Independent recomputation of what the stages stored, for end-to-end tests.

A model's probe is recomputed in memory from its checkpoint with ``probe_model`` on the
pipeline's suite and grid, then measured with ``measure_database`` and turned into the
paper80 row: no store, no stage code in between.
"""

import numpy as np

from ml4ml import dims, store
from ml4ml.measure.feature_sets import paper80
from ml4ml.measure.measures import measure_database
from ml4ml.probe.responses import probe_model
from ml4ml.probe.stage import load_probe_suite
from ml4ml.zoo.training import load_checkpoint


def recompute(pipeline, mid: str, suite_name=None, transform=None):
    """(probe dataset, paper80 row as a 1-row DataFrame) of one model, from its checkpoint."""
    suite_spec = next(s for s in pipeline.suites if suite_name in (None, s.name))
    transform = transform or next(iter(pipeline.transforms))
    suite = load_probe_suite(pipeline, suite_spec)
    table = store.read_models(pipeline.store)
    model, recipe = load_checkpoint(str(table.checkpoint.sel(mid=mid).values))
    probe = probe_model(model, suite.images, suite.labels, transform,
                        pipeline.transforms[transform], normalize=recipe.normalize,
                        layers=list(pipeline.probe.layers) or None,
                        batch_size=pipeline.probe.batch_size,
                        fgsm_epsilon=pipeline.probe.fgsm_epsilon)
    measured = measure_database(probe.expand_dims({dims.MID: [mid]})).compute()
    return probe, paper80(measured)


def assert_stored_as_recomputed(pipeline, mids, features, suite_name=None, transform=None):
    """The stored probes of ``mids`` equal the recomputed ones exactly, and the features
    table (one row per model, ``mid`` first) equals the recomputed paper80 rows."""
    suite_spec = next(s for s in pipeline.suites if suite_name in (None, s.name))
    transform = transform or next(iter(pipeline.transforms))
    stored = store.open_probes(pipeline.store, suite_spec.name, transform)
    for mid in mids:
        probe, row = recompute(pipeline, mid, suite_name, transform)
        for name in (dims.PROB, dims.PREDICTION, dims.CONFIDENCE, dims.ACT):
            np.testing.assert_array_equal(stored[name].sel({dims.MID: mid}).values,
                                          probe[name].values, err_msg=f"{mid} {name}")
        got = features.set_index(dims.MID).loc[mid]
        expected = row.set_index(dims.MID).loc[mid]
        assert list(got.index) == list(expected.index)
        np.testing.assert_allclose(got.to_numpy(float), expected.to_numpy(float), rtol=1e-12,
                                   atol=0, equal_nan=True, err_msg=mid)
        assert np.isfinite(expected.to_numpy(float)).sum() >= 60, mid  # features, not NaNs
