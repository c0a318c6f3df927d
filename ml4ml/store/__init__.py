"""The store: the only code that touches Zarr.

Modules: ``backend`` (local folders and fsspec URLs), ``layout`` (the committed layout and
crash recovery), ``held`` (which stores this process holds the writer lock of), ``lock``
(one writer per store), ``arrays`` (datasets as Zarr groups),
``groups`` (create, validate and open a store and its groups), ``models`` (the models
table), ``probes`` (probe groups), ``rows`` (derived groups), ``lineage`` (which derived
rows are fresh), ``suites`` (the suites the store records), ``legacy`` and ``importing``
(the reference's .npy files). Users read a store with plain ``xr.open_zarr(path,
group=...)`` or ``xr.open_datatree(path, engine="zarr")``.
"""

from ml4ml.store.backend import is_url  # noqa: F401
from ml4ml.store.groups import *  # noqa: F401,F403
from ml4ml.store.groups import __all__ as _groups_all
from ml4ml.store.layout import commit, recover  # noqa: F401
from ml4ml.store.lock import holder, writing  # noqa: F401
from ml4ml.store.require import require_store  # noqa: F401
from ml4ml.store.models import add_models, model_ids, read_models, update_models  # noqa: F401
from ml4ml.store.probes import (DIGEST, ERROR, INTERPOLATION, SOURCE, SUITE_DIGEST,  # noqa: F401
                                check_compatible,
                                finish_probes, init_probes, open_probes, probe_digest,
                                probe_layout,
                                write_probe, write_probe_data, write_probe_failure)
from ml4ml.store.rows import (PROBE_DIGEST, RowWrites, append_measures,  # noqa: F401
                              append_responses, stored_labels,
                              clear_done, prepare_rows, rewrite_coordinate)
from ml4ml.store.lineage import fresh_mids, fresh_rows, row_lineage  # noqa: F401
from ml4ml.store.suites import record_suites, recorded_suites  # noqa: F401

__all__ = list(_groups_all) + [
    "is_url", "require_store", "commit", "recover", "holder", "writing", "add_models", "model_ids",
    "read_models", "update_models", "DIGEST", "ERROR", "INTERPOLATION", "SOURCE", "SUITE_DIGEST",
    "check_compatible",
    "clear_done", "init_probes", "open_probes", "probe_digest", "write_probe",
    "write_probe_data", "finish_probes", "probe_layout", "write_probe_failure", "PROBE_DIGEST", "RowWrites",
    "append_measures", "append_responses", "stored_labels", "prepare_rows", "rewrite_coordinate", "fresh_mids", "fresh_rows",
    "row_lineage", "record_suites", "recorded_suites",
]
