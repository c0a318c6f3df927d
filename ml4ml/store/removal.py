"""Removing models' rows from every group: planned in a journal, finished whatever happens.

``remove_rows(path, mids)`` takes the rows of ``mids`` out of every group that has a
``mid`` dim (models, probes, matrices, measures, labels, assess), so that the other rows
keep their values bit for bit. The rows after a removed one move up, so every chunk from
there on changes. As with new rows (``store.layout``), the new data is written where the
committed layout does not look, and one commit switches to it:

1. the plan is written whole, in one atomic write, to ``JOURNAL`` at the store's root: each
   group's row count and the positions kept, each ``mid`` array's chunk key encoding, the
   files to delete after;
2. per group, the kept rows of each ``mid`` array are written under the other chunk key
   encoding of Zarr v3 (``default``, keys ``c/0/0``, and ``v2``, keys ``0/0``, both with
   "/"): chunk files the committed layout never reads, so readers see the old rows,
   whole, until
3. one layout change (``layout.begin`` / ``commit``) gives each ``mid`` array its new
   shape and encoding, rewrites the derived ``level_module`` coordinate from the kept
   rows and sets the planned group attributes;
4. the chunk files of the old encoding are deleted, and the journal marks the group done;
   once every group is, the planned files, then the journal, are deleted.

Every step can be redone from the journal (a group whose committed encoding differs from
the planned one is past its commit): a writer killed at any point leaves a journal that the
next writer finishes as it takes the lock (``resume``, run by ``store.writing``), whatever
command it runs. A group left without rows is deleted. The caller holds the store's lock.
"""

from __future__ import annotations

import json
import os

import numpy as np
from zarr.core.sync import sync

from ml4ml import dims
from ml4ml.errors import StoreError
from ml4ml.store.backend import local_root, zarr_store
from ml4ml.store.layout import (METADATA_KEY, _read_json, _write_json, begin, commit,
                                committed_nodes, quiet)

__all__ = ["JOURNAL", "remove_rows", "pending", "pending_problems", "resume",
           "clean_partial_files", "groups_with_rows"]

JOURNAL = ".ml4ml-removing"
# kept rows copied per read (an array's rows read at once)
COPY_ROWS = 64
DEFAULT_KEYS = {"name": "default", "configuration": {"separator": "/"}}
V2_KEYS = {"name": "v2", "configuration": {"separator": "/"}}


def pending(path) -> dict | None:
    """The journal of an unfinished removal, or None."""
    return _read_json(zarr_store(path, read_only=True), JOURNAL)


def pending_problems(path) -> list[tuple[str, str, str]]:
    """``store check``'s (where, what, mend) for a removal a killed writer left unfinished."""
    plan = pending(path)
    if plan is None:
        return []
    left = [g for g, step in plan["groups"].items() if not step["done"]]
    return [("/", f"the removal of model(s) {', '.join(plan['mids'])} was interrupted "
             f"({len(left)} group(s) left: {', '.join(sorted(left)[:3])}"
             f"{' ...' if len(left) > 3 else ''})",
             f"run 'ml4ml remove-models {path} {' '.join(plan['mids'])}' (or any command "
             f"that writes the store) to finish it")]


def groups_with_rows(path, mids) -> dict[str, list[str]]:
    """{group: its ids in row order} of the committed groups holding a row of ``mids``."""
    from ml4ml.store.groups import zarr_group

    nodes = committed_nodes(path) or {}
    wanted = {str(m) for m in mids}
    out = {}
    for node, metadata in sorted(nodes.items()):
        if metadata.get("node_type") != "array" or not node.endswith(f"/{dims.MID}"):
            continue
        group = node[:-len(dims.MID) - 1]
        with quiet():
            ids = [str(m) for m in zarr_group(path, group, mode="r",
                                              committed=True)[dims.MID][:].tolist()]
        if wanted & set(ids):
            out[group] = ids
    return out


def remove_rows(path, mids, *, files=(), group_attrs=None, command: str = "") -> list[str]:
    """Remove the rows of ``mids`` from every group, crash-safe; return the groups changed.

    files : local files to delete once every group is done (checkpoints ml4ml wrote).
    group_attrs : {group: {attribute: value}} set on a group as its rows are removed.
    """
    groups = groups_with_rows(path, mids)
    removing = {str(m) for m in mids}
    plan = {"command": command, "mids": sorted(removing), "files": [str(f) for f in files],
            "groups": {}}
    for group, ids in groups.items():
        plan["groups"][group] = {
            "rows": len(ids), "keep": [k for k, m in enumerate(ids) if m not in removing],
            "keys": {name: _encoding(meta) for name, meta in _mid_arrays(path, group).items()},
            "attrs": (group_attrs or {}).get(group, {}), "done": False}
    _write_json(zarr_store(path), JOURNAL, plan)  # from here on it is finished, whatever happens
    _finish(path, plan)
    return sorted(groups)


def resume(path) -> list[str]:
    """Finish the removal a killed writer left in the journal; notes of what was done."""
    plan = pending(path)
    if plan is None:
        return []
    notes = [f"deleted {name}, a temporary file of an interrupted write"
             for name in clean_partial_files(path)]
    _finish(path, plan)
    command = f" ('{plan['command']}')" if plan.get("command") else ""
    return notes + [f"finished removing model(s) {', '.join(plan['mids'])}{command}, "
                    f"interrupted before"]


def clean_partial_files(path) -> list[str]:
    """Delete the temporary files of writes a killed writer left in a local store
    (``*.partial``, never read); return them. The caller holds the store's lock."""
    root = local_root(path)
    if root is None or not root.is_dir():
        return []
    found = sorted(root.rglob("*.partial"))
    for file in found:
        file.unlink(missing_ok=True)
    return [str(file.relative_to(root)) for file in found]


# ----------------------------------------------------------------------------- steps
def _finish(path, plan: dict) -> None:
    store = zarr_store(path)
    for group in sorted(plan["groups"], key=lambda g: (g == "models", g)):  # models last
        step = plan["groups"][group]
        if step["done"]:
            continue
        if step["keep"]:
            _remove_from_group(path, store, group, step)
        else:
            from ml4ml.store.groups import delete_group

            delete_group(path, group)
        step["done"] = True
        _write_json(store, JOURNAL, plan)
    for file in plan["files"]:
        try:
            os.remove(file)
        except FileNotFoundError:
            pass
    sync(store.delete(JOURNAL))


def _encoding(metadata: dict) -> dict:
    return metadata.get("chunk_key_encoding") or DEFAULT_KEYS


def _other(encoding: dict) -> dict:
    return V2_KEYS if encoding.get("name", "default") == "default" else DEFAULT_KEYS


def _mid_arrays(path, group: str) -> dict[str, dict]:
    """{array name: committed metadata} of ``group``'s arrays along ``mid``."""
    nodes = committed_nodes(path) or {}
    prefix = group + "/"
    return {node[len(prefix):]: metadata for node, metadata in nodes.items()
            if node.startswith(prefix) and "/" not in node[len(prefix):]
            and metadata.get("node_type") == "array"
            and dims.MID in (metadata.get("dimension_names") or [])}


def _remove_from_group(path, store, group: str, step: dict) -> None:
    """Steps 2 to 4 for one group (each redone as far as it had not been)."""
    arrays = _mid_arrays(path, group)
    committed = any(_encoding(arrays.get(name, {})) != encoding
                    for name, encoding in step["keys"].items())
    if not committed:
        new = {name: _new_metadata(path, group, name, metadata, step)
               for name, metadata in arrays.items()}
        with quiet():
            for name in arrays:
                _copy_rows(store, group, name, new[name], step["keep"])
        begin(path, group)
        for name, metadata in new.items():
            _write_json(store, f"{group}/{name}/{METADATA_KEY}", metadata)
        _rewrite_derived(path, group, step["attrs"])
        commit(path, group)
    for name, encoding in step["keys"].items():
        _delete_chunks(store, f"{group}/{name}", encoding)


def _new_metadata(path, group, name, metadata: dict, step: dict) -> dict:
    axis = metadata["dimension_names"].index(dims.MID)
    if metadata["shape"][axis] != step["rows"]:
        raise StoreError(f"'{group}/{name}' has {metadata['shape'][axis]} rows, the removal "
                         f"planned for {step['rows']}", file=path, field=f"{group}/{name}",
                         hint=f"run 'ml4ml store check {path}'")
    new = json.loads(json.dumps(metadata))
    new["shape"][axis] = len(step["keep"])
    new["chunk_key_encoding"] = _other(_encoding(metadata))
    return new


def _copy_rows(store, group: str, name: str, new: dict, keep) -> None:
    """Write the ``keep`` rows of the committed array ``group/name`` under ``new``'s chunk
    keys (its metadata is not written: the committed layout still reads the old ones)."""
    import zarr
    from zarr.core.array import Array, AsyncArray
    from zarr.storage import StorePath

    source = zarr.open_array(store, path=f"{group}/{name}", mode="r")
    target = Array(AsyncArray(metadata=new, store_path=StorePath(store, f"{group}/{name}")))
    axis = new["dimension_names"].index(dims.MID)
    keep = np.asarray(keep, dtype=np.int64)
    for start in range(0, len(keep), COPY_ROWS):
        rows = keep[start:start + COPY_ROWS]
        where = [slice(None)] * len(new["shape"])
        where[axis] = rows
        block = source.get_orthogonal_selection(tuple(where))
        where[axis] = slice(start, start + len(rows))
        target[tuple(where)] = block


def _delete_chunks(store, array: str, encoding: dict) -> None:
    """Delete the chunk files of ``array`` under ``encoding`` (the one it left)."""
    if encoding.get("name", "default") == "default":
        sync(store.delete_dir(f"{array}/c"))
        return

    async def listed():
        return [key async for key in store.list_prefix(f"{array}/")]

    for key in sync(listed()):
        first = key[len(array) + 1:].split("/", 1)[0]
        if first.split(".", 1)[0].isdigit():  # a v2 chunk key (or a temporary file of one)
            sync(store.delete(key))


def _rewrite_derived(path, group: str, attrs: dict) -> None:
    """The values of ``group`` that depend on its rows: ``level_module`` and ``unit_layer``
    (from the kept rows' ``layer_name``), and the planned attributes."""
    from ml4ml.store.arrays import fit
    from ml4ml.store.groups import zarr_group

    with quiet():
        zgroup = zarr_group(path, group)
        if dims.LEVEL_MODULE in zgroup and dims.LAYER_NAME in zgroup:
            names = np.asarray(zgroup[dims.LAYER_NAME][:], dtype=object)
            modules = dims.level_modules_of(names, names.shape[-1])
            array = zgroup[dims.LEVEL_MODULE]
            array[...] = fit(array, np.asarray(modules, dtype=object), dims.LEVEL_MODULE)
        if dims.UNIT_LAYER in zgroup and dims.UNIT_COUNT in zgroup:
            from ml4ml.store.probes import unit_layers

            array = zgroup[dims.UNIT_LAYER]
            array[...] = fit(array, np.asarray(unit_layers(
                zgroup[dims.LAYER_NAME][:], zgroup[dims.UNIT_COUNT][:],
                zgroup[dims.UNIT_LABEL][:].tolist()), dtype=object), dims.UNIT_LAYER)
        if attrs:
            zgroup.attrs.update(json.loads(json.dumps(attrs)))
