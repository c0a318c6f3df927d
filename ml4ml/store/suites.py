"""The suites a store's models run on, as the store itself records them.

The root attribute ``suites`` maps each suite's name to the image shape and class count
its probes use::

    {"digits": {"image_shape": [1, 28, 28], "n_classes": 10}}

``train``, ``probe`` and ``add-models`` record the suites they use; ``add-models`` checks
new models against this record, so a store copied without its spec (or whose spec moved)
still refuses a model of the wrong shape or class count. Read it with plain zarr or
xarray: ``xr.open_datatree(path, engine="zarr").attrs["suites"]``.
"""

from __future__ import annotations

from ml4ml.errors import StoreError
from ml4ml.store.backend import zarr_store
from ml4ml.store.groups import store_attrs

__all__ = ["SUITES_ATTR", "recorded_suites", "record_suites"]

SUITES_ATTR = "suites"


def recorded_suites(path) -> dict[str, tuple[tuple[int, ...], int]]:
    """{suite: ((channel, height, width), n_classes)} the store records; {} if none yet."""
    value = store_attrs(path).get(SUITES_ATTR)
    if value is None:
        return {}
    out = {}
    if isinstance(value, dict):
        for name, entry in value.items():
            shape = entry.get("image_shape") if isinstance(entry, dict) else None
            classes = entry.get("n_classes") if isinstance(entry, dict) else None
            if not (isinstance(shape, list) and len(shape) == 3
                    and all(isinstance(v, int) and v > 0 for v in shape)
                    and isinstance(classes, int) and classes > 0):
                break
            out[str(name)] = (tuple(shape), classes)
        else:
            return out
    raise StoreError(f"the recorded suites are malformed: expected {{suite: {{'image_shape': "
                     f"[channel, height, width], 'n_classes': k}}}}, found {value!r:.120}",
                     file=path, field=SUITES_ATTR,
                     hint="probe the store again with its spec, which records them anew")


def record_suites(path, suites: dict) -> None:
    """Record ``{suite: ((channel, height, width), n_classes)}`` (one atomic root write).

    Suites already recorded the same are left; a suite recorded otherwise is replaced (its
    spec changed). Nothing is written when nothing changes. The caller holds the lock.
    """
    from ml4ml.store.layout import METADATA_KEY, _read_json, _write_json
    from ml4ml.store.held import is_held

    if not suites:
        return
    if not is_held(path):
        raise StoreError("recording suites needs the store's writer lock", file=path,
                         hint="wrap the writes in 'with ml4ml.store.writing(path):'")
    known = recorded_suites(path)
    new = {str(name): (tuple(int(v) for v in shape), int(classes))
           for name, (shape, classes) in suites.items()}
    if all(known.get(name) == value for name, value in new.items()):
        return
    known.update(new)
    backend = zarr_store(path)
    root = _read_json(backend, METADATA_KEY)
    root.setdefault("attributes", {})[SUITES_ATTR] = {
        name: {"image_shape": list(shape), "n_classes": classes}
        for name, (shape, classes) in sorted(known.items())}
    _write_json(backend, METADATA_KEY, root)
