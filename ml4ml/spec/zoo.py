"""The ``[zoo]`` of a spec expanded into recipes and added models, and checked.

``[zoo]`` (and ``[zoo.defaults]``) give every model's defaults; ``[[zoo.grids]]`` the
cartesian product of its lists; ``[zoo.sample]`` recipes drawn (seeded) from ``choices``;
``[[zoo.models]]`` one model each (trained here, or trained elsewhere with
``checkpoint``); ``[zoo.checkpoints]`` every file a glob matches. Each merged recipe is
validated by ``spec.schema.RecipeFields``, then checked across its fields (hold-out ids,
architectures, suites, anomaly parameters) here.
"""

from __future__ import annotations

import glob as globbing
import importlib
import itertools
from pathlib import Path

import numpy as np

from ml4ml import dims
from ml4ml.spec import registry
from ml4ml.spec.messages import check_part, check_table, did_you_mean, table, unknown_keys
from ml4ml.spec.recipe import AddedModel, Recipe
from ml4ml.spec.schema import (BUILTIN_ARCHS, RECIPE_FIELDS, AddedEntry, CheckpointsTable,
                               RecipeFields, SampleTable, ZooTable)
from ml4ml.spec.tables import resolve

__all__ = ["read_zoo", "make_recipe", "check_module_arch", "parse_layers",
           "check_layer_counts", "LAYERS", "DEFAULT_N_LAYERS"]

# the models table's column of each model's own layers (``zoo.layers``)
LAYERS = "layers"
DEFAULT_N_LAYERS = dims.DEFAULT_N_LAYERS
ZOO_KEYS = set(ZooTable.model_fields) - set(RECIPE_FIELDS)
_LIST_FIELDS = {"normalize_mean", "normalize_std", "anomaly_removed"}


def parse_layers(value, where: str, problems) -> tuple:
    """A spec's ``layers = [...]`` as a tuple of names; a problem (``where``) otherwise."""
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(
            isinstance(x, str) and x for x in value):
        problems.add(where, f"expected a non-empty list of module names (from "
                     f"model.named_modules()), got {value!r}")
        return ()
    twice = sorted({x for x in value if value.count(x) > 1})
    if twice:
        problems.add(where, f"each layer may be named once; found {twice} more than once")
        return ()
    return tuple(value)


def check_layer_counts(own_layers: dict, n_layers: int, problems) -> None:
    """A spec problem for each model whose own layers (``{mid: (where, layers)}``) name
    another number of modules than every model records (``n_layers``)."""
    for mid, (where, layers) in own_layers.items():
        if layers and len(layers) != n_layers:
            problems.add(where, f"model {mid!r} names {len(layers)} layer(s); every model "
                         f"records {n_layers} ([probe] layers, or {DEFAULT_N_LAYERS} by "
                         f"default): name {n_layers}")


def _recipe_keys(tab: dict, prefix: str, problems) -> None:
    unknown_keys(tab, RECIPE_FIELDS, prefix, problems)


def read_zoo(raw, problems, base=Path(".")) -> tuple[list[Recipe], list, dict]:
    """Expand ``[zoo]``: defaults + grids (cartesian) + sampled recipes + explicit models,
    and the models trained elsewhere (``checkpoint`` models, ``[zoo.checkpoints]``);
    {mid: (where, layers)} of the models that name their own layers."""
    tab = table(raw, "zoo", problems)
    unknown_keys(tab, ZOO_KEYS | set(RECIPE_FIELDS), "zoo.", problems)
    # plain recipe fields directly under [zoo] act as defaults too
    defaults = {k: v for k, v in tab.items() if k in RECIPE_FIELDS}
    defaults_tab = tab.get("defaults", {})
    if not isinstance(defaults_tab, dict):
        problems.add("zoo.defaults", "expected a table of recipe fields")
        defaults_tab = {}
    _recipe_keys(defaults_tab, "zoo.defaults.", problems)
    defaults.update(defaults_tab)

    entries: list[tuple[str, dict]] = []  # (where, fields)
    counters = {"m": 0, "t": 0}

    def next_id(holdout: bool) -> str:
        prefix = "t" if holdout else "m"
        counters[prefix] += 1
        return f"{prefix}{counters[prefix]:03d}"

    for g, grid in enumerate(tab.get("grids", [])):
        where = f"zoo.grids[{g}]"
        if not isinstance(grid, dict):
            problems.add(where, "expected a table of recipe fields, each a list of values")
            continue
        _recipe_keys(grid, where + ".", problems)
        keys = [k for k in grid if k in RECIPE_FIELDS]
        axes = [grid[k] if isinstance(grid[k], list) and k not in _LIST_FIELDS
                else [grid[k]] for k in keys]
        for key, axis in zip(keys, axes):
            for option in axis:
                if isinstance(option, dict):
                    _recipe_keys(option, f"{where}.{key}[].", problems)
        for combo in itertools.product(*axes):
            values = {}
            for key, option in zip(keys, combo):
                values.update(option if isinstance(option, dict) else {key: option})
            entries.append((where, values))

    sample = tab.get("sample")
    before = len(problems.items)
    if sample is not None:
        entries.extend(_sampled(sample, problems))
    sample_broken = len(problems.items) > before

    added, entry_layers = [], {}
    for k, model in enumerate(tab.get("models", [])):
        where = f"zoo.models[{k}]"
        if not isinstance(model, dict):
            problems.add(where, "expected a table of recipe fields")
            continue
        if "checkpoint" in model:
            added.extend(_added(model, where, base, problems))
            continue
        model = dict(model)
        entry_layers[where] = parse_layers(model.pop(LAYERS, None), f"{where}.{LAYERS}",
                                           problems)
        _recipe_keys(model, where + ".", problems)
        entries.append((where, model))
    if "checkpoints" in tab:
        added.extend(_added(tab["checkpoints"], "zoo.checkpoints", base, problems))

    if not entries and not defaults.get("mid") and not sample_broken and not added:
        problems.add("zoo", "the zoo has no models: add [[zoo.grids]], [zoo.sample] or "
                     "[[zoo.models]]")
    origin = {k: ("zoo.defaults" if k in defaults_tab else "zoo") for k in defaults}
    recipes, seen = [], {}
    for where, values in entries:
        merged = {**defaults, **values}
        holdout = bool(merged.get("holdout", False))
        if "mid" not in values:
            merged["mid"] = next_id(holdout)
        fields_origin = {k: v for k, v in origin.items() if k not in values}
        recipe = make_recipe(merged, where, problems, fields_origin)
        if recipe is None:
            continue
        if recipe.mid in seen:
            problems.add(where + ".mid", f"model id {recipe.mid!r} is already used by "
                         f"{seen[recipe.mid]}")
            continue
        seen[recipe.mid] = where
        recipes.append(recipe)
    own_layers = {r.mid: (f"{seen[r.mid]}.{LAYERS}", entry_layers[seen[r.mid]])
                  for r in recipes if entry_layers.get(seen[r.mid])}
    for model in added:
        if model.mid in seen:
            problems.add(f"zoo.models ({model.mid})", f"model id {model.mid!r} is already used "
                         f"by {seen[model.mid]}")
        seen[model.mid] = f"checkpoint {model.checkpoint}"
        if model.layers:
            own_layers[model.mid] = (f"{model.where}.{LAYERS}", model.layers)
    return recipes, added, own_layers


def _added(tab, where, base, problems) -> list:
    """Models trained elsewhere: one ``checkpoint``, or every file a ``glob`` matches."""
    if not isinstance(tab, dict):
        problems.add(where, "expected a table with checkpoint (or glob), arch, holdout, ...")
        return []
    is_glob = where == "zoo.checkpoints"
    entry = check_part(CheckpointsTable if is_glob else AddedEntry, tab, where + ".", problems)
    layers = parse_layers(tab.get(LAYERS), f"{where}.{LAYERS}", problems)
    if entry is None:
        return []
    if len(entry.normalize_mean) != len(entry.normalize_std):
        problems.add(f"{where}.normalize_std", "normalize_mean and normalize_std need one "
                     "value per channel each")
    if entry.arch.startswith("module:"):
        check_module_arch(entry.arch, base, f"{where}.arch", problems)
    if is_glob:
        full = resolve(entry.glob, base)
        files = sorted(globbing.glob(full)) if "://" not in full else []
        if not files:
            problems.add(f"{where}.glob", f"no file matches {full!r}")
        pairs = [(Path(f).stem, f) for f in files]
    else:
        pairs = [(entry.mid or Path(entry.checkpoint).stem,
                  resolve(entry.checkpoint, base))]
    out = []
    for mid, file in pairs:
        if not mid or not mid.replace("_", "").replace("-", "").isalnum():
            problems.add(f"{where}.mid", f"expected letters, digits, '-' or '_', got {mid!r}")
            continue
        holdout = mid.startswith("t") if entry.holdout is None else entry.holdout
        if holdout != mid.startswith("t"):
            problems.add(f"{where}.mid", f"hold-out ids start with 't' and only they do; got "
                         f"{mid!r} with holdout = {str(holdout).lower()}")
        out.append(AddedModel(mid=mid, checkpoint=file, arch=entry.arch, holdout=holdout,
                              partition=entry.partition,
                              normalize_mean=tuple(entry.normalize_mean),
                              normalize_std=tuple(entry.normalize_std), base=str(base),
                              layers=layers, where=where, trusted=entry.trust))
    return out


def check_module_arch(arch, base, where, problems) -> None:
    """A ``module:<package.module>:<Class>`` arch imports (relative to the spec's folder)."""
    parts = arch.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        problems.add(where, f"expected 'module:<package.module>:<Class>', got {arch!r}")
        return
    try:
        with registry.import_path(str(base)):
            module = importlib.import_module(parts[1])
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's module
        problems.add(where, f"cannot import module {parts[1]!r} (relative to {base}): "
                     f"{type(exc).__name__}: {exc}")
        return
    if not isinstance(getattr(module, parts[2], None), type):
        problems.add(where, f"module {parts[1]!r} has no class {parts[2]!r}")


def _sampled(sample, problems) -> list[tuple[str, dict]]:
    """``[zoo.sample]``: n_regular + n_holdout recipes drawn from ``choices`` (seeded)."""
    where = "zoo.sample"
    if not isinstance(sample, dict):
        problems.add(where, "expected a table with n_regular, n_holdout, seed, choices")
        return []
    choices = sample.get("choices", {})
    checked = check_table(SampleTable, {k: v for k, v in sample.items() if k != "choices"},
                          where + ".", problems)
    if checked is None:
        return []
    if not isinstance(choices, dict):
        problems.add(where + ".choices", "expected a table: field = [values to draw from]")
        return []
    for key, options in choices.items():
        if key not in RECIPE_FIELDS:
            problems.add(f"{where}.choices.{key}", "not a recipe field" +
                         did_you_mean(key, sorted(RECIPE_FIELDS)))
            return []
        if not isinstance(options, list) or not options:
            problems.add(f"{where}.choices.{key}", "expected a non-empty list of values")
            return []
        for opt in options:
            if isinstance(opt, dict):
                _recipe_keys(opt, f"{where}.choices.{key}[].", problems)
    rng = np.random.RandomState(checked.seed)
    out = []
    for k in range(checked.n_regular + checked.n_holdout):
        values = {"holdout": k >= checked.n_regular}
        for key, options in choices.items():
            pick = options[rng.randint(len(options))]
            if isinstance(pick, dict):
                values.update(pick)
            else:
                values[key] = pick
        out.append((f"{where} (model {k})", values))
    return out


def make_recipe(values: dict, where: str, problems, origin=None) -> Recipe | None:
    """One recipe's fields validated (``RecipeFields``) and checked across fields; None
    (with problems noted) if invalid.

    origin : field -> the table it was inherited from (reported there, once).
    """
    origin = origin or {}
    fields = check_table(RecipeFields, {k: v for k, v in values.items() if k in RECIPE_FIELDS},
                         where + ".", problems, origin=origin, floats=True)
    if fields is None:
        return None
    out = {k: getattr(fields, k) for k in fields.model_fields_set}
    for name in ("normalize_mean", "normalize_std"):
        if name in out:
            out[name] = tuple(float(x) for x in out[name])
    if "anomaly_removed" in out:
        out["anomaly_removed"] = tuple((float(x[0]), float(x[1]))
                                       for x in out["anomaly_removed"])
    recipe = Recipe(**out)
    broken = []

    def bad(name, why):
        broken.append(name)
        problems.add(f"{origin.get(name, where)}.{name}", why)

    if any(low >= high for low, high in recipe.anomaly_removed):
        bad("anomaly_removed", f"expected a list of [low, high] intervals, got "
            f"{values['anomaly_removed']!r}")
        return None
    _check_recipe(recipe, where, problems, bad)
    return None if broken else recipe


def _check_recipe(recipe: Recipe, where: str, problems, bad) -> None:
    """The checks across a recipe's fields (each field alone is checked by its model)."""
    if recipe.holdout != recipe.mid.startswith("t"):
        bad("mid", f"hold-out ids start with 't' and only they do; got {recipe.mid!r} with "
            f"holdout = {str(recipe.holdout).lower()}")
    arch = recipe.arch
    if arch.startswith("module:"):
        check_module_arch(arch, getattr(problems, "base", None) or Path("."), f"{where}.arch",
                          problems)
    elif arch.startswith("torchvision:"):
        import torchvision

        tv_name = arch.split(":", 1)[1]
        known = torchvision.models.list_models(module=torchvision.models)
        if tv_name not in known:
            bad("arch", f"torchvision has no classification model {tv_name!r}"
                + did_you_mean(tv_name, known))
    elif arch not in BUILTIN_ARCHS:  # pragma: no cover - the schema's pattern refuses it
        bad("arch", f"unknown architecture {arch!r}")
    if recipe.train_suite not in registry.suite_names():
        bad("train_suite", f"unknown suite {recipe.train_suite!r}; known: "
            f"{', '.join(registry.suite_names())}")
    if recipe.augmentation in ("scaling", "brightness") and recipe.aug_range >= 1:
        bad("aug_range", "expected >= 0 (degrees for rotation, a in 1 +- a < 1 for "
            f"scaling/brightness), got {recipe.aug_range!r}")
    if recipe.anomaly in (2, 3, 5, 7, 8) and not 0 < recipe.anomaly_fraction <= 1:
        bad("anomaly_fraction", f"anomaly {recipe.anomaly} ({recipe.anomaly_name}) needs "
            f"anomaly_fraction in (0, 1], got {recipe.anomaly_fraction}")
    elif recipe.anomaly == 3 and recipe.anomaly_class < 0:
        bad("anomaly_class", "anomaly 3 (class_imbalance) needs anomaly_class >= 0")
    elif recipe.anomaly == 6 and (not recipe.anomaly_removed or recipe.augmentation == "none"):
        bad("anomaly_removed", "anomaly 6 (impaired_augmentation) needs an augmentation and "
            "anomaly_removed = [[low, high], ...]")
    elif recipe.anomaly == 6:
        centre = 0.0 if recipe.augmentation == "rotation" else 1.0
        low, high = centre - recipe.aug_range, centre + recipe.aug_range
        outside = [list(r) for r in recipe.anomaly_removed if r[0] < low or r[1] > high]
        kept = (high - low) - sum(min(r[1], high) - max(r[0], low)
                                  for r in recipe.anomaly_removed)
        if outside:
            bad("anomaly_removed", f"removed interval(s) {outside} lie outside the "
                f"{recipe.augmentation} range [{low:g}, {high:g}] (aug_range {recipe.aug_range:g})")
        elif kept <= 0:
            bad("anomaly_removed", f"the removed intervals cover the whole range "
                f"[{low:g}, {high:g}]: nothing is left to draw from")
    if len(recipe.normalize_mean) != len(recipe.normalize_std):
        bad("normalize_std", "normalize_mean and normalize_std need one value per channel each")

