"""A store and its groups: create, validate, open, list.

A store is a Zarr v3 group (a local folder or any fsspec URL) whose root attributes
carry the schema version and the float precision of probe responses, and whose groups
hold xarray datasets (layouts in ``ml4ml.dims``)::

    models                          dim mid: recipes, checkpoints, outcomes
    probes/<suite>/<transform>      responses over the grid, per model
    matrices/<suite>/<transform>    variance matrices
    measures/<suite>/<transform>    the paper's measures and accuracies
    labels/<transform>              labels per model and source, expert ratings
    assess/<transform>              assessor results and the refit assessor
    assess/<transform>/rank         every single measure ranked against the labels

Readers open any group with plain ``xr.open_zarr(path, group=...)``, the whole store with
``xr.open_datatree(path, engine="zarr")``: both read the committed layout
(``store.layout``). Writers go through the stage functions, which hold the store's lock.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from ml4ml import dims
from ml4ml.errors import StoreError
from ml4ml.store.backend import is_url, local_root, zarr_store
from ml4ml.store.held import is_held
from ml4ml.store.layout import commit, quiet

__all__ = [
    "SCHEMA_VERSION", "SCHEMA_ATTR", "PRECISION_ATTR", "PRECISIONS", "MODELS_GROUP",
    "probe_group", "matrices_group", "measures_group", "labels_group", "assess_group",
    "rank_group",
    "create_store", "store_exists", "has_root", "store_attrs", "store_precision", "group_exists",
    "list_groups", "open_group", "read_group", "replace_group", "delete_group", "zarr_group", "done_mids",
]

SCHEMA_VERSION = 2
SCHEMA_ATTR = "ml4ml_schema_version"
PRECISION_ATTR = "ml4ml_float_dtype"
PIPELINE_ATTR = "pipeline"  # the spec file that created the store (absolute path)
PRECISIONS = ("float32", "float64")
MODELS_GROUP = "models"
DOCS = "docs/measures.md"


def probe_group(suite: str, transform: str) -> str:
    return f"probes/{suite}/{transform}"


def matrices_group(suite: str, transform: str) -> str:
    return f"matrices/{suite}/{transform}"


def measures_group(suite: str, transform: str) -> str:
    return f"measures/{suite}/{transform}"


def labels_group(transform: str) -> str:
    return f"labels/{transform}"


def assess_group(transform: str) -> str:
    return f"assess/{transform}"


def rank_group(transform: str) -> str:
    """Where ``ml4ml measures rank`` writes: a child of the assess group, so ``ml4ml
    assess`` and the rank each replace only their own arrays (dim ``score`` there; the
    assess group's ``score`` is a variable along ``mid``)."""
    return f"assess/{transform}/rank"


def create_store(path, *, precision: str = "float32", pipeline=None) -> dict:
    """Create an empty store at ``path``, or check an existing one; return its attributes.

    precision : float dtype of probe responses, "float32" (default) or "float64" (used for
        imported reference files). An existing store keeps its own.
    pipeline : the spec file that creates it, recorded as the ``pipeline`` attribute (for a
        local store, relative to the store's folder, so a folder copied with its spec keeps
        it), so advice can name the command that probes or trains it again.
    The caller holds the store's lock (``store.writing``).
    """
    if precision not in PRECISIONS:
        raise StoreError(f"precision must be one of {PRECISIONS}, got {precision!r}",
                         file=path, field="precision")
    if store_exists(path):
        return store_attrs(path)
    _refuse_non_store(path)
    if not is_held(path):
        raise StoreError("creating a store needs its writer lock", file=path,
                         hint="wrap the writes in 'with ml4ml.store.writing(path):'")
    attrs = {
        SCHEMA_ATTR: SCHEMA_VERSION, PRECISION_ATTR: precision,
        "description": "ml4ml model database: probes, variance matrices, measures, labels "
                       "and assessors of many models (ML4ML, arXiv 2109.12926)",
        "measures_documentation": DOCS,
    }
    if pipeline is not None:
        attrs[PIPELINE_ATTR] = _pipeline_reference(pipeline, path)
    # the root document in its final form, committed (empty), in ONE atomic write: a store
    # exists whole or not at all
    root = {"zarr_format": 3, "node_type": "group", "attributes": attrs,
            "consolidated_metadata": {"kind": "inline", "must_understand": False,
                                      "metadata": {}}}
    try:
        from ml4ml.store.layout import METADATA_KEY, _write_json

        _write_json(zarr_store(path), METADATA_KEY, root)
    except (OSError, ValueError) as exc:  # unreachable URL, not a folder ...
        raise StoreError(f"cannot create a store here: {exc}", file=path) from exc
    return store_attrs(path)


def _refuse_non_store(path) -> None:
    root = local_root(path)
    if root is not None:
        if root.exists() and not root.is_dir():
            raise StoreError("is a file, not a store folder", file=path,
                             hint="give the path of a store folder (e.g. stores/db.zarr)")
        if root.is_dir() and any(p.name != ".ml4ml-writer" for p in root.iterdir()):
            raise StoreError("exists and is not an ml4ml store: the root has no schema "
                             "version attribute", file=path, field=SCHEMA_ATTR,
                             hint="choose a new path")


def _pipeline_reference(pipeline, path) -> str:
    spec = Path(pipeline).resolve()
    root = local_root(path)
    if root is None:
        return str(spec)
    return os.path.relpath(spec, Path(root).resolve())


def pipeline_file(attrs: dict, path) -> str | None:
    """The spec file the store records (``pipeline`` attribute) as a path, or None."""
    spec = attrs.get(PIPELINE_ATTR)
    if not spec:
        return None
    root = local_root(path)
    if root is not None and not Path(spec).is_absolute():
        return str((Path(root) / spec).resolve())
    return str(spec)


def has_root(path) -> bool:
    """Whether ``path`` holds a root Zarr document (a store, valid or not)."""
    root = local_root(path)
    if root is not None:
        return (root / "zarr.json").is_file()
    try:
        _root_attrs(path)
    except StoreError:
        return False
    return True


def store_exists(path) -> bool:
    """Whether ``path`` holds a store with a schema version (valid or not)."""
    root = local_root(path)
    if root is not None and not (root / "zarr.json").is_file():
        return False
    try:
        attrs = _root_attrs(path)
    except StoreError:
        return False
    return SCHEMA_ATTR in attrs


def _root_attrs(path) -> dict:
    root = local_root(path)
    if root is not None and root.exists() and not root.is_dir():
        raise StoreError("is a file, not a store folder", file=path,
                         hint="give the path of a store folder (e.g. stores/db.zarr)")
    store = zarr_store(path, read_only=True)  # its own error (an s3:// URL without s3fs)
    try:
        with quiet():
            group = zarr.open_group(store, mode="r", use_consolidated=False, zarr_format=3)
    except Exception as exc:
        raise StoreError("no ml4ml store here", file=path,
                         hint="create one with 'ml4ml train', 'ml4ml probe' or "
                              "'ml4ml import-legacy'") from exc
    return dict(group.attrs)


def store_attrs(path) -> dict:
    """The store's root attributes, validated; StoreError naming the field otherwise."""
    attrs = _root_attrs(path)
    if SCHEMA_ATTR not in attrs:
        raise StoreError("not an ml4ml store: the root has no schema version attribute",
                         file=path, field=SCHEMA_ATTR)
    version = attrs[SCHEMA_ATTR]
    if not isinstance(version, int) or isinstance(version, bool):
        raise StoreError(f"schema version must be an integer, found {version!r}", file=path,
                         field=SCHEMA_ATTR, hint="the store was not written by ml4ml")
    if version > SCHEMA_VERSION:
        raise StoreError(f"store schema version {version} is newer than this ml4ml "
                         f"understands ({SCHEMA_VERSION})", file=path, field=SCHEMA_ATTR,
                         hint="upgrade ml4ml")
    if version < SCHEMA_VERSION:
        raise StoreError(f"store schema version {version} is older than this ml4ml's "
                         f"({SCHEMA_VERSION})", file=path, field=SCHEMA_ATTR,
                         hint="rebuild the store with this version (train/probe/import "
                              "again into a new path)")
    precision = attrs.get(PRECISION_ATTR)
    if precision not in PRECISIONS:
        raise StoreError(f"probe precision must be one of {PRECISIONS}, found {precision!r}",
                         file=path, field=PRECISION_ATTR)
    return attrs


def store_precision(path) -> np.dtype:
    return np.dtype(store_attrs(path)[PRECISION_ATTR])


def zarr_group(path, group: str = "", *, mode: str = "r+",
               committed: bool = False) -> zarr.Group:
    """The zarr group at ``group``, for writers.

    committed : read its arrays' metadata from the committed layout (one read of the root,
        no read per array): for writing data into a layout no change is pending on. False:
        the metadata as it is now (a layout being changed).
    """
    store = zarr_store(path, read_only=mode == "r")
    with quiet():
        if committed:
            root = zarr.open_group(store, mode=mode, use_consolidated=True, zarr_format=3)
            return root[group] if group else root
        return zarr.open_group(store, path=group, mode=mode, use_consolidated=False,
                               zarr_format=3)


def group_exists(path, group: str, *, committed: bool = True) -> bool:
    """Whether ``group`` itself holds arrays (its child groups' arrays do not count), in
    the committed layout (or as it is now)."""
    if committed:
        from ml4ml.store.layout import committed_nodes

        nodes = committed_nodes(path) or {}
        return any(p.startswith(group + "/") and "/" not in p[len(group) + 1:]
                   and n.get("node_type") == "array" for p, n in nodes.items())
    try:
        node = zarr_group(path, group, mode="r")
    except Exception:
        return False
    return len(list(node.array_keys())) > 0


def list_groups(path, prefix: str) -> list[tuple[str, str]]:
    """``(suite, transform)`` pairs committed under ``prefix`` ("probes", "measures", ...)."""
    from ml4ml.store.layout import committed_nodes

    return group_pairs(committed_nodes(path) or {}, prefix)


def group_pairs(nodes: dict, prefix: str, *, with_arrays: bool = False
                ) -> list[tuple[str, str]]:
    """``(suite, transform)`` pairs of the committed ``nodes`` under ``prefix``; with
    ``with_arrays``, only groups that hold arrays (laid out, not merely created)."""
    pairs = set()
    for node, metadata in nodes.items():
        parts = node.split("/")
        if parts[0] != prefix:
            continue
        if with_arrays:
            if len(parts) == 4 and metadata.get("node_type") == "array":
                pairs.add((parts[1], parts[2]))
        elif len(parts) == 3 and metadata.get("node_type") == "group":
            pairs.add((parts[1], parts[2]))
    return sorted(pairs)


def open_group(path, group: str, *, committed: bool = True) -> xr.Dataset:
    """Lazily open one group as an xarray Dataset (dask-backed).

    committed : read the committed layout, as every reader does (default); False reads
        the layout as it is now (a writer's own uncommitted changes).
    """
    store_attrs(path)
    if not group_exists(path, group, committed=committed):
        raise StoreError(f"the store has no group '{group}'", file=path)
    with quiet():
        return xr.open_zarr(zarr_store(path, read_only=True), group=group,
                            consolidated=committed)


def read_group(path, group: str, *, committed: bool = True) -> xr.Dataset:
    """Load a small group whole, every array read at once (the models table, labels).

    The same dataset ``open_group(...).load()`` gives, in one round of concurrent reads
    rather than one read after another.
    """
    import asyncio

    from zarr.api import asynchronous

    store_attrs(path)
    if not group_exists(path, group, committed=committed):
        raise StoreError(f"the store has no group '{group}'", file=path)

    async def load():
        root = await asynchronous.open_group(zarr_store(path, read_only=True), mode="r",
                                             use_consolidated=True if committed else False)
        node = await root.getitem(group)
        arrays = [(name, array) async for name, array in node.arrays()]
        values = await asyncio.gather(*(array.getitem(...) for _, array in arrays))
        return dict(node.attrs), [(name, array.metadata, value)
                                  for (name, array), value in zip(arrays, values)]

    from zarr.core.sync import sync

    with quiet():
        attrs, arrays = sync(load())
    variables = {}
    for name, metadata, value in arrays:
        value = np.asarray(value)
        if value.dtype.kind == "T":
            value = value.astype(object)
        variables[name] = xr.Variable(tuple(metadata.dimension_names or ()), value,
                                      dict(metadata.attributes))
    ds = xr.Dataset(variables, attrs=attrs)
    return xr.decode_cf(ds, mask_and_scale=False)


def delete_group(path, group: str) -> None:
    """Remove ``group`` and commit that (its stage writes it again). The caller holds the
    store's lock."""
    from ml4ml.store.layout import _delete_node, begin

    if group_exists(path, group):
        begin(path, group)
        with quiet():
            _delete_node(zarr_store(path), group)
        commit(path, group)


def replace_group(path, group: str, ds: xr.Dataset) -> None:
    """Replace ``group`` by ``ds``, written whole (a small result group such as assess/...).

    The old group is removed and that committed, then the new one is written and
    committed: a crash in between leaves the group absent (its stage writes it again),
    never half old and half new. The caller holds the store's lock.
    """
    from ml4ml.store.arrays import ROW_CHUNK, layout_group
    from ml4ml.store.layout import _delete_node

    from ml4ml.store.layout import begin

    if group_exists(path, group):
        begin(path, group)
        with quiet():
            _delete_node(zarr_store(path), group)
        commit(path, group)
    begin(path, group)
    with quiet():
        layout_group(zarr_group(path), group, ds, mid_chunk=ROW_CHUNK, write="all")
    commit(path, group)


def done_mids(ds: xr.Dataset, flag: str = dims.DONE) -> list[str]:
    """Ids of the models whose ``flag`` (``done`` by default) is set."""
    if flag not in ds:
        return []
    done = np.asarray(ds[flag].values, dtype=bool)
    return [str(m) for m in np.asarray(ds[dims.MID].values)[done]]


def mid_positions(ds, mids, path, group) -> list[int]:
    """Row positions of ``mids`` in a group; StoreError naming an unknown id."""
    have = {str(m): k for k, m in enumerate(np.asarray(ds[dims.MID][:] if isinstance(
        ds, zarr.Group) else ds[dims.MID].values).tolist())}
    out = []
    for m in mids:
        if str(m) not in have:
            raise StoreError(f"model {m!r} is not in '{group}'", file=path, field=dims.MID)
        out.append(have[str(m)])
    return out


def check_unique(mids, path) -> None:
    seen = set()
    for m in mids:
        if str(m) in seen:
            raise StoreError(f"model id {m!r} appears twice", file=path, field=dims.MID)
        seen.add(str(m))


def select_rows(ds: xr.Dataset, mids) -> xr.Dataset:
    """``ds`` over ``mids`` (that order), taken by slices of consecutive rows.

    A list selection (``ds.sel(mid=[...])``) makes dask copy every chunk it touches (a
    fancy index, 40 MB per CIFAR-sized model's ``act``); slices take a group's one-model
    chunks as they are. Same values and coordinates as ``ds.sel({mid: mids})``.
    """
    mids = [str(m) for m in mids]
    have = [str(m) for m in ds[dims.MID].values]
    if mids == have:
        return ds
    rows = mid_positions(ds, mids, "", "the dataset")
    runs, start = [], 0
    for k in range(1, len(rows) + 1):
        if k == len(rows) or rows[k] != rows[k - 1] + 1:
            runs.append(slice(rows[start], rows[k - 1] + 1))
            start = k
    if len(runs) == 1:
        return ds.isel({dims.MID: runs[0]})
    if not runs:
        return ds.isel({dims.MID: slice(0, 0)})
    return xr.concat([ds.isel({dims.MID: run}) for run in runs], dim=dims.MID,
                     data_vars="minimal", coords="minimal", compat="override",
                     join="override", combine_attrs="override")


__all__ += ["mid_positions", "check_unique", "is_url", "select_rows"]
