"""``store check``'s level checks: matrices and measures groups whose ``level`` labels are
not this version's (docs/measures.md, "Levels"), or whose ``level_module`` coordinate no
longer matches the module names of their rows."""

from __future__ import annotations

import numpy as np

from ml4ml import dims
from ml4ml.store.groups import probe_group, zarr_group

__all__ = ["level_problems"]


def level_problems(path, committed: dict) -> list[tuple[str, str, str]]:
    """Matrices and measures groups whose ``level`` labels are not this version's (levels
    named after modules, ``conv2_mean``, or ``layer0_mean``, by earlier versions; or levels
    of another number of layers than their probes record), or whose ``level_module``
    coordinate no longer matches the module names of their rows: (group, what is
    wrong, the mend) of each (``store check`` lists them)."""
    out = []
    for node, metadata in sorted(committed.items()):
        parts = node.split("/")
        if metadata.get("node_type") != "array" or len(parts) != 4 or \
                parts[0] not in ("matrices", "measures") or parts[3] != dims.LEVEL:
            continue
        group = "/".join(parts[:3])
        zgroup = _read_group(path, group)
        if zgroup is None:
            continue
        levels = [str(v) for v in zgroup[dims.LEVEL][:].tolist()]
        probes = _read_group(path, probe_group(parts[1], parts[2]))
        n_layers = (probes[dims.LAYER_NAME].shape[-1] if probes is not None
                    and dims.LAYER_NAME in probes else None)
        found = dims.n_layers_of_levels(levels)
        if found is None or (n_layers is not None and found != n_layers):
            expected = dims.level_names(n_layers or found or dims.DEFAULT_N_LAYERS)
            what = (f"levels named {levels[1] if len(levels) > 1 else levels}, ... (an "
                    f"earlier ml4ml's naming; now by position from the output: "
                    f"{expected[1]}, ..., {expected[-1]})" if found is None else
                    f"levels of {found} recorded layer(s); its probes record {n_layers}")
            assessed = any(p.startswith(f"assess/{parts[2]}/") for p in committed)
            then = (f", then 'ml4ml assess {path} --transform {parts[2]}' (its "
                    f"features are named after the levels)" if assessed else "")
            out.append((group, what, f"run 'ml4ml measure {path} --force' to measure every "
                        f"model again{then}"))
            continue
        if dims.LEVEL_MODULE not in zgroup or dims.LAYER_NAME not in zgroup:
            continue
        stored = [str(v) for v in zgroup[dims.LEVEL_MODULE][:].tolist()]
        names = np.asarray(zgroup[dims.LAYER_NAME][:], dtype=object)
        expected = dims.level_modules_of(names, found, levels)
        if stored != expected:
            k = next(k for k, (a, b) in enumerate(zip(stored, expected)) if a != b)
            out.append((group, f"'{dims.LEVEL_MODULE}' is out of date with the module names "
                        f"of its rows (level {levels[k]}: {stored[k] or 'none'!r}, its "
                        f"rows give {expected[k] or 'none'!r})",
                        f"run 'ml4ml measure {path}' to rewrite it"))
    return out


def _read_group(path, group):
    try:
        return zarr_group(path, group, mode="r")
    except Exception:  # noqa: BLE001 - a group that cannot be opened has its own problem
        return None
