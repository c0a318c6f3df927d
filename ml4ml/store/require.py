"""Whether a path is an ml4ml store holding what a command needs: one check, one line.

``require_store(path, needs=..., transform=..., suite=...)`` is what every command that
reads a store calls first. It tells apart a path that does not exist, a file, an empty
folder, a folder or Zarr store of something else (a Zarr v2 store, an array, a foreign
group, a group inside an ml4ml store), a store of another schema version, an unknown
suite or transform (naming those the store has), and a stage not run yet (naming the
command to run, runnable as printed). Everything is read from the root document, once.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ml4ml.errors import InputError, StoreError
from ml4ml.store.backend import is_url, local_root
from ml4ml.store.groups import SCHEMA_ATTR, group_pairs, pipeline_file, store_attrs

__all__ = ["require_store", "NEEDS"]

# what a command may need, each stage after the ones before it
NEEDS = ("store", "probes", "measures", "labels", "assess")
_MAKERS = ("stores are made by 'ml4ml train', 'ml4ml probe' or 'ml4ml run' with a pipeline "
           "spec, or by 'ml4ml import-legacy'")
_WRITER_FILE = ".ml4ml-writer"


def require_store(path, needs: str = "store", *, transform: str | None = None,
                  suite: str | None = None) -> dict:
    """The store's root attributes, once ``path`` holds everything ``needs`` asks for.

    needs : "store" (a valid ml4ml store), "probes" (probe groups; with ``transform`` /
        ``suite``, of those), "measures" (measures of them), "labels" (labels of
        ``transform``, measured) or "assess" (a stored assessment of ``transform``).
    transform, suite : the names given on the command line, if any: checked against the
        store's, whatever ``needs`` is (once the store has probes).

    Raises StoreError (no store, not a store, a stage not run yet: the hint names the
    command to run) or InputError (an unknown suite or transform, listing the store's).
    """
    if needs not in NEEDS:
        raise ValueError(f"needs must be one of {NEEDS}, got {needs!r}")
    _require_root(path)
    attrs = store_attrs(path)
    from ml4ml.store.layout import committed_nodes

    nodes = committed_nodes(path) or {}
    probes = _pairs(nodes, "probes")
    if needs == "store" and not probes and transform is None and suite is None:
        return attrs
    if not probes:
        probe = pipeline_command(attrs, "probe", path)
        raise _not_yet(path, "the store has no probes yet",
                       hint=f"probe its models with '{probe}'"
                            + (", PIPELINE being the spec that trained them"
                               if probe.endswith("PIPELINE") else "")
                            + ", or import the reference's files with 'ml4ml import-legacy "
                            f"{_quote(path)} --mid MID --results FILE --act FILE'")
    labelled = sorted(p.split("/")[1] for p, n in nodes.items()
                      if p.startswith("labels/") and p.count("/") == 1
                      and n.get("node_type") == "group")
    _known(path, probes, transform, suite, labelled)
    if needs in ("store", "probes"):
        return attrs
    measured = [(s, t) for s, t in _pairs(nodes, "measures")
                if (transform is None or t == transform) and (suite is None or s == suite)]
    if not measured:
        what = "/".join(x for x in (suite, transform) if x)
        raise _not_yet(path, f"the store has no measures{' for ' + what if what else ''} yet",
                       hint=f"run 'ml4ml measure {_quote(path)}' first")
    if needs == "measures":
        return attrs
    if transform is None:
        raise ValueError(f"needs={needs!r} needs a transform")
    if not _has_arrays(nodes, f"labels/{transform}"):
        raise _not_yet(path, f"the store has no labels for {transform!r} yet",
                       hint=f"write some with 'ml4ml label {_quote(path)} --transform "
                            f"{shlex.quote(transform)} --from recipe' (or --from FILE)")
    if needs == "labels":
        return attrs
    if not _has_arrays(nodes, f"assess/{transform}"):
        raise _not_yet(path, f"the store has no assessor for {transform!r} yet",
                       hint=f"run 'ml4ml assess {_quote(path)} --transform "
                            f"{shlex.quote(transform)}' first")
    return attrs


def _not_yet(path, message: str, *, hint: str) -> StoreError:
    """A stage not run yet; while another process writes the store (it may be running
    that stage now), the error names that process instead."""
    from ml4ml.store.lock import _describe, writer_now

    busy = writer_now(path)
    if busy:
        return StoreError(f"another process is writing this store: {_describe(busy)}",
                          file=path, hint=f"{message} (it may be making them now): wait for "
                          "it to finish, then run this command again")
    return StoreError(message, file=path, hint=hint)


def _quote(path) -> str:
    return shlex.quote(str(path))


def pipeline_command(attrs: dict, verb: str, path=None) -> str:
    """``ml4ml VERB SPEC`` for the spec that created the store (its ``pipeline``
    attribute), runnable as printed: only while that file exists and still names this store
    (``path``; a copied or moved store's spec names another one). Else ``PIPELINE`` stands
    for the spec."""
    spec = pipeline_file(attrs, path) if path is not None else None
    if spec and _spec_names_store(spec, path):
        return f"ml4ml {verb} {_quote(spec)}"
    return f"ml4ml {verb} PIPELINE"


def _spec_names_store(spec, path) -> bool:
    """Whether the spec file ``spec`` exists and its ``[store] path`` is ``path``."""
    import tomllib

    try:
        table = tomllib.loads(Path(spec).read_text()).get("store", {})
        value = str(table.get("path", ""))
    except (OSError, ValueError, AttributeError):
        return False
    if not value:
        return False
    if "://" in value or is_url(str(path)):
        return value.rstrip("/") == str(path).rstrip("/")
    target = Path(value).expanduser()
    target = target if target.is_absolute() else Path(spec).parent / target
    return target.resolve() == Path(path).expanduser().resolve()


def _pairs(nodes: dict, prefix: str) -> list[tuple[str, str]]:
    """(suite, transform) of the committed groups under ``prefix`` that hold arrays."""
    return group_pairs(nodes, prefix, with_arrays=True)


def _has_arrays(nodes: dict, group: str) -> bool:
    return any(p.startswith(group + "/") and "/" not in p[len(group) + 1:]
               and n.get("node_type") == "array" for p, n in nodes.items())


def _known(path, probes, transform, suite, labelled) -> None:
    """InputError for a suite or transform the store does not have, listing those it has."""
    suites = sorted({s for s, _ in probes})
    transforms = sorted({t for _, t in probes} | set(labelled))
    if transform is not None and transform not in transforms:
        raise InputError(f"unknown transform {transform!r}; the store has: "
                         f"{', '.join(transforms)}", file=path, field="--transform")
    if suite is not None and suite not in suites:
        raise InputError(f"unknown suite {suite!r}; the store has: {', '.join(suites)}",
                         file=path, field="--suite")
    if suite is not None and transform is not None and (suite, transform) not in probes:
        on = sorted(s for s, t in probes if t == transform)
        raise InputError(f"transform {transform!r} was not probed on suite {suite!r}"
                         + (f"; it was on: {', '.join(on)}" if on else ""),
                         file=path, field="--suite")


def _require_root(path) -> None:
    """StoreError unless ``path`` holds a root Zarr group with ml4ml's schema attribute
    (its value is checked by ``store_attrs``). URLs are left to ``store_attrs``."""
    root = local_root(path)
    if root is None:
        return
    if not root.exists():
        inside = _enclosing_store(root)
        if inside is not None:
            raise StoreError(f"no such group in the ml4ml store {str(inside)!r}", file=path,
                             hint=f"give the store's own folder, {str(inside)!r}")
        raise StoreError("no store here: the folder does not exist", file=path,
                         hint=f"check the path; {_MAKERS}")
    if not root.is_dir():
        raise StoreError("is a file, not a store folder", file=path,
                         hint="give the path of a store folder (e.g. stores/db.zarr)")
    metadata = root / "zarr.json"
    if not metadata.is_file():
        entries = [p.name for p in root.iterdir() if p.name != _WRITER_FILE]
        if not entries:
            raise StoreError("the folder is empty: no ml4ml store here yet", file=path,
                             hint=_MAKERS)
        if any(name in (".zgroup", ".zarray", ".zattrs") for name in entries):
            raise StoreError("a Zarr v2 store, not an ml4ml store (those are Zarr v3, with "
                             f"'{SCHEMA_ATTR}' in the root's attributes)", file=path,
                             hint="give the path of an ml4ml store")
        raise StoreError("a folder that holds no Zarr store (no zarr.json), not an ml4ml "
                         "store", file=path, hint="give the path of an ml4ml store")
    try:
        document = json.loads(metadata.read_bytes())
    except (OSError, ValueError) as exc:
        raise StoreError(f"the root document is damaged (not valid JSON: {exc})",
                         file=path, field="zarr.json",
                         hint="restore the store, or make it again") from None
    if not isinstance(document, dict) or document.get("node_type") != "group":
        kind = document.get("node_type") if isinstance(document, dict) else None
        raise StoreError(f"a Zarr {kind or 'document'}, not an ml4ml store (whose root is a "
                         "group)", file=path, hint="give the path of an ml4ml store")
    if SCHEMA_ATTR not in (document.get("attributes") or {}):
        inside = _enclosing_store(root.parent)
        if inside is not None:
            raise StoreError(f"a group inside the ml4ml store {str(inside)!r}, not a store",
                             file=path, hint=f"give the store's own folder, {str(inside)!r}")
        raise StoreError("not an ml4ml store: the root has no schema version attribute "
                         "(a Zarr group written by something else)", file=path,
                         field=SCHEMA_ATTR, hint="give the path of an ml4ml store")


def _enclosing_store(folder):
    """The nearest folder above (or at) ``folder`` that is an ml4ml store, else None."""
    for candidate in (folder, *folder.parents):
        metadata = candidate / "zarr.json"
        if metadata.is_file():
            try:
                attrs = json.loads(metadata.read_bytes()).get("attributes") or {}
            except (OSError, ValueError, AttributeError):
                return None
            if SCHEMA_ATTR in attrs:
                return candidate
    return None
