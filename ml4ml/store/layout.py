"""The committed layout of a store: one document, replaced atomically, that readers trust.

A store's layout (which groups and arrays exist, their shapes, dims and attrs) is
committed in the root ``zarr.json`` as Zarr's consolidated metadata. That file is written
whole, in one atomic step (a rename on a local disk, one PUT on object storage), so it
always describes either the layout before a change or the layout after it. Plain
``xr.open_zarr(path, group=...)`` and ``xr.open_datatree(path, engine="zarr")`` read
exactly this document, so readers never see a half-made group or a half-extended axis.

A writer changes the layout node by node (new arrays, new shapes; the data of new rows,
which lies beyond the committed shapes and is invisible until the commit), then calls
``commit``. If it dies before, the next writer's ``recover`` (run when it takes the
store's lock) puts every node back as committed: nodes the commit does not list are
removed, nodes whose metadata differs are rewritten from it. A committed node that is
missing is damage, reported and never papered over.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ml4ml.errors import StoreError
from ml4ml.store.backend import zarr_store
from ml4ml.store.held import is_held

__all__ = ["begin", "commit", "committed_nodes", "actual_nodes", "recover", "quiet"]

METADATA_KEY = "zarr.json"


@contextmanager
def quiet():
    """Silence zarr's notices about consolidated metadata and string dtypes in Zarr v3."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=".*StringDType.*")
        warnings.filterwarnings("ignore", message=".*vlen-utf8.*")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
        # the writer lock file and zarr's own temporary files are not zarr nodes
        warnings.filterwarnings("ignore", message=".*is not recognized as a component of a "
                                "Zarr hierarchy.*")
        yield


PENDING_KEY = ".ml4ml-pending"


def begin(path, group: str) -> None:
    """Say that ``group``'s layout is about to change (a marker the next writer reads).

    Every layout change runs between ``begin(path, group)`` and ``commit(path, group)``;
    a writer that dies in between leaves the marker, and the next writer's ``recover``
    rolls back exactly that group (without it, recovery has nothing to look at).
    """
    if not is_held(path):
        raise StoreError("a layout change needs the store's writer lock", file=path,
                         hint="wrap the writes in 'with ml4ml.store.writing(path):'")
    store = zarr_store(path)
    pending = _read_json(store, PENDING_KEY) or {"groups": []}
    if group not in pending["groups"]:
        pending["groups"].append(group)
        _write_json(store, PENDING_KEY, pending)


def commit(path, group: str | None = None) -> None:
    """Make the store's current layout the committed one (one atomic root write).

    group : the group whose layout changed (since ``begin``): only its nodes are read
        again and replaced in the committed layout, and its marker is cleared. None:
        every node is read again (zarr's ``consolidate_metadata``).
    Only the holder of the store's writer lock commits (``store.writing``).
    """
    if not is_held(path):
        raise StoreError("a layout change needs the store's writer lock", file=path,
                         hint="wrap the writes in 'with ml4ml.store.writing(path):'")
    if str(path).startswith("s3://"):
        from ml4ml.store.object_lock import lost

        if lost(str(path)):
            raise StoreError("this process lost the store's writer lock (it stalled longer "
                             "than the lock's heartbeat allows and another writer took over)",
                             file=path, hint="run the command again")
    store = zarr_store(path)
    if group is None:
        with quiet():
            zarr.consolidate_metadata(store)
    else:
        _commit_group(store, group)
    pending = _read_json(store, PENDING_KEY)
    if pending is not None:
        rest = [g for g in pending["groups"] if g != group] if group else []
        if rest:
            _write_json(store, PENDING_KEY, {"groups": rest})
        else:
            sync(store.delete(PENDING_KEY))


def _commit_group(store, group: str) -> None:
    """Replace ``group``'s subtree in the root's consolidated metadata by what is stored."""
    root = _read_json(store, METADATA_KEY)
    consolidated = root.get("consolidated_metadata") or {"kind": "inline",
                                                           "must_understand": False,
                                                           "metadata": {}}
    flat = {}
    _flatten(consolidated.get("metadata", {}), "", flat)
    flat = {p: m for p, m in flat.items() if p != group and not p.startswith(group + "/")}
    node = _read_json(store, _key(group))
    if node is not None:
        found = {group: _without_consolidated(node)}
        _walk(store, group, found)
        parts = group.split("/")
        for depth in range(1, len(parts)):  # ancestors, should they be new too
            ancestor = "/".join(parts[:depth])
            if ancestor not in flat:
                metadata = _read_json(store, _key(ancestor))
                if metadata is not None:
                    found[ancestor] = _without_consolidated(metadata)
        flat.update(found)
    entries = {}
    # sorted by path: zarr's reader groups a parent's children with itertools.groupby
    # after a sort by depth only, so children of one parent must lie next to each other
    for name, metadata in sorted(flat.items()):
        if metadata.get("node_type") == "group":
            metadata = {**metadata, "consolidated_metadata": {
                "kind": "inline", "must_understand": False, "metadata": {}}}
        entries[name] = metadata
    root = {**_without_consolidated(root), "consolidated_metadata": {
        "kind": "inline", "must_understand": False, "metadata": entries}}
    _write_json(store, METADATA_KEY, root)


def committed_nodes(path) -> dict[str, dict] | None:
    """``{node path: metadata dict}`` of the committed layout; None if nothing is committed."""
    raw = _read_json(zarr_store(path, read_only=True), METADATA_KEY)
    if raw is None:
        return None
    consolidated = raw.get("consolidated_metadata")
    if not isinstance(consolidated, dict):
        return None
    nodes = {"": _without_consolidated(raw)}
    _flatten(consolidated.get("metadata", {}), "", nodes)
    return nodes


def actual_nodes(path) -> dict[str, dict]:
    """``{node path: metadata dict}`` of every group and array as the store holds them now."""
    store = zarr_store(path, read_only=True)
    nodes = {}
    root = _read_json(store, METADATA_KEY)
    if root is None:
        return nodes
    nodes[""] = _without_consolidated(root)
    _walk(store, "", nodes)
    return nodes


def recover(path, *, full: bool = False) -> list[str]:
    """Roll back every layout change that was not committed; return what was done.

    Called by a writer holding the store's lock, before it writes anything. Only the
    groups a marker names (``begin``) are compared with the committed layout, unless
    ``full`` (every node: ``store repair``).
    """
    committed = committed_nodes(path)
    if committed is None:
        return []
    store = zarr_store(path)
    pending = _read_json(store, PENDING_KEY)
    if not full and pending is None:
        return []
    if full:
        actual = actual_nodes(path)
    else:
        actual = {"": _without_consolidated(_read_json(store, METADATA_KEY) or {})}
        for group in pending["groups"]:
            node = _read_json(store, _key(group))
            if node is not None:
                actual[group] = _without_consolidated(node)
                _walk(store, group, actual)
            parts = group.split("/")
            for depth in range(1, len(parts)):
                ancestor = "/".join(parts[:depth])
                metadata = _read_json(store, _key(ancestor))
                if metadata is not None:
                    actual[ancestor] = _without_consolidated(metadata)
        names = [g for g in pending["groups"]]
        committed = {p: m for p, m in committed.items()
                     if p == "" or any(p == g or p.startswith(g + "/") or
                                       g.startswith(p + "/") for g in names)}
    actions = []
    missing = sorted(p for p in committed if p not in actual)
    if missing:
        raise StoreError(f"the store is damaged: {len(missing)} committed node(s) are missing, "
                         f"e.g. '{missing[0]}'", file=path,
                         hint=f"run 'ml4ml store check {path}' for the whole list")
    # uncommitted nodes, deepest first (a new group's arrays, then the group)
    for node in sorted((p for p in actual if p not in committed), key=len, reverse=True):
        if any(node.startswith(p + "/") for p in actual if p not in committed and p != node
               and len(p) < len(node)):
            continue  # removed with its uncommitted parent
        _delete_node(store, node)
        actions.append(f"removed '{node}' (laid out, never committed)")
    for node, metadata in committed.items():
        if node in actual and actual[node] != metadata:
            _write_json(store, _key(node), metadata)
            actions.append(f"restored the committed metadata of '{node or '/'}'")
    if pending is not None:
        sync(store.delete(PENDING_KEY))
    return actions


# ----------------------------------------------------------------------------- helpers
def _key(node: str) -> str:
    return f"{node}/{METADATA_KEY}" if node else METADATA_KEY


def _without_consolidated(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if k != "consolidated_metadata"}


def _flatten(children: dict, prefix: str, out: dict) -> None:
    for name, metadata in children.items():
        node = f"{prefix}/{name}" if prefix else name
        out[node] = _without_consolidated(metadata)
        nested = metadata.get("consolidated_metadata")
        if isinstance(nested, dict):
            _flatten(nested.get("metadata", {}), node, out)


def _walk(store, prefix: str, out: dict) -> None:
    async def names():
        return [name async for name in store.list_dir(prefix)]

    for name in sync(names()):
        if name == METADATA_KEY or name.startswith("."):
            continue
        node = f"{prefix}/{name}" if prefix else name
        metadata = _read_json(store, _key(node))
        if metadata is None:
            continue
        out[node] = _without_consolidated(metadata)
        if metadata.get("node_type") == "group":
            _walk(store, node, out)


def _read_json(store, key: str) -> dict | None:
    buffer = sync(store.get(key, prototype=default_buffer_prototype()))
    if buffer is None:
        return None
    try:
        return json.loads(buffer.to_bytes())
    except ValueError as exc:
        raise StoreError(f"metadata file '{key}' is not valid JSON: {exc}") from exc


def _write_json(store, key: str, metadata: dict) -> None:
    data = json.dumps(metadata, indent=2).encode()
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def _delete_node(store, node: str) -> None:
    sync(store.delete_dir(node))
    if sync(store.exists(_key(node))):
        sync(store.delete(_key(node)))
