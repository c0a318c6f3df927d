"""Pipeline specs (TOML): load, validate, and expand the zoo into recipes.

``load_pipeline(path)`` returns a ``Pipeline`` or raises one ``SpecError`` that lists
every problem found, each as ``file: field 'x.y': why``. Relative paths in a spec are
relative to the spec file's folder. The schema is documented in README.md
("Pipeline spec").
"""

from __future__ import annotations

import difflib
import itertools
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ml4ml.errors import SpecError
from ml4ml.zoo.layers import DEFAULT_N_LAYERS, LAYERS, check_layer_counts, parse_layers
from ml4ml.zoo.recipe import ANOMALIES, AUGMENTATIONS, OPTIMIZERS, Recipe

BUILTIN_ARCHS = ("cnn5", "vgg13bn", "resnet")
# where ``run`` takes labels from: the recipe proxy, the labels in the store (the current
# source, e.g. merged expert ratings), or a label file (a path, relative to the spec)
LABEL_SOURCES = ("recipe", "store")
ASSESSORS = ("decision_tree", "random_forest", "adaboost", "linear", "logistic",
             "gradient_boosting")


@dataclass(frozen=True)
class SuiteSpec:
    """A test suite to probe on: ``suites.load_suite(name, split, n_samples=, seed=)``."""

    name: str
    split: str = "test"
    n_samples: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class ProbeSpec:
    layers: tuple = ()  # module names; () = the last two convolutions (zoo.layers)
    batch_size: int = 256
    device: str = "cpu"
    fgsm_epsilon: float = 0.0


@dataclass(frozen=True)
class AssessSpec:
    transform: str = "rotation"
    label_source: str = "recipe"
    assessors: tuple = ASSESSORS
    repeats: int = 10
    features: str = "paper80"
    split: str = "correct"
    suite: str = ""  # "" = the first suite


@dataclass(frozen=True)
class LabelsSpec:
    """``[labels]``: what the labelling page tells its raters."""

    guideline: str = ""  # "" = the page's default for the transform


GUIDELINE_MAX = 4000


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline spec."""

    file: Path
    name: str
    store: str
    precision: str
    checkpoints: Path | str  # a local folder, or a URL prefix beside a store at a URL
    data_root: Path | None
    suites: tuple  # of SuiteSpec
    transforms: dict  # name -> np.ndarray grid (P,)
    recipes: tuple  # of Recipe
    probe: ProbeSpec = field(default_factory=ProbeSpec)
    assess: AssessSpec = field(default_factory=AssessSpec)
    workers: int | None = None  # [cluster] workers: a LocalCluster when no option says else
    added: tuple = ()  # of zoo.adding.AddedModel: models trained elsewhere, never trained
    labels: LabelsSpec = field(default_factory=LabelsSpec)
    # mid -> the layers the spec chooses for it ([[zoo.models]], [zoo.checkpoints] layers)
    layers: dict = field(default_factory=dict)

    @property
    def mids(self) -> list[str]:
        return [r.mid for r in self.recipes] + [a.mid for a in self.added]

    def recipe(self, mid: str) -> Recipe:
        for r in self.recipes:
            if r.mid == mid:
                return r
        raise KeyError(mid)


class _Problems:
    """Collects every problem of one spec file, raised together at the end."""

    def __init__(self, file):
        self.file = str(file)
        self.items: list[str] = []

    def add(self, field_name: str, why: str) -> None:
        item = f"{self.file}: field '{field_name}': {why}"
        if item not in self.items:  # a bad default is one problem, however many models use it
            self.items.append(item)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:  # one clear line: file, field, why
            err = SpecError(self.items[0].split(": ", 1)[1], file=self.file)
        else:
            err = SpecError(f"{len(self.items)} problems in pipeline spec:\n  "
                            + "\n  ".join(self.items), file=self.file)
        err.problems = list(self.items)
        raise err


TOP_KEYS = {"name", "description", "store", "data", "suites", "transforms", "zoo", "probe",
            "cluster",
            "assess", "labels"}
RECIPE_FIELDS = set(Recipe.field_names())


def load_pipeline(path) -> Pipeline:
    """Read and validate a pipeline spec; SpecError listing every problem otherwise."""
    path = Path(path)
    if path.is_dir():
        raise SpecError("is a folder, not a pipeline spec file", file=path,
                        hint="give a TOML file, e.g. pipelines/demo-digits.toml")
    if not path.is_file():
        raise SpecError("no such pipeline spec file", file=path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"not valid TOML: {exc}", file=path) from exc
    problems = _Problems(path)
    base = path.parent
    problems.base = base
    _unknown_keys(raw, TOP_KEYS, "", problems)

    name = raw.get("name", path.stem)
    store_tab = _table(raw, "store", problems)
    _unknown_keys(store_tab, {"path", "precision", "checkpoints"}, "store.", problems)
    store_path = store_tab.get("path")
    if not isinstance(store_path, str) or not store_path:
        problems.add("store.path", "required: where the store is written, e.g. "
                     "\"../stores/demo.zarr\" (relative to this file) or \"memory://x.zarr\"")
        store_path = "missing.zarr"
    store = _resolve(store_path, base)
    precision = store_tab.get("precision", "float32")
    if precision not in ("float32", "float64"):
        problems.add("store.precision", f"expected 'float32' or 'float64', got {precision!r}")
    checkpoints = store_tab.get("checkpoints")
    checkpoints = _checkpoints(_resolve(checkpoints, base) if isinstance(checkpoints, str)
                               else str(store).rstrip("/") + ".checkpoints")

    data_tab = _table(raw, "data", problems)
    _unknown_keys(data_tab, {"root"}, "data.", problems)
    data_root = Path(_resolve(data_tab["root"], base)) if "root" in data_tab else None

    suites = _suites(raw, problems)
    transforms = _transforms(raw, problems)
    recipes, added, own_layers = _zoo(raw, problems, base)
    probe = _probe(raw, problems)
    check_layer_counts(own_layers, len(probe.layers) or DEFAULT_N_LAYERS, problems)
    workers = _cluster(raw, problems)
    assess = _assess(raw, transforms, suites, problems, base)
    labels = _labels(raw, problems)
    problems.raise_if_any()
    return Pipeline(file=path, name=str(name), store=store, precision=precision,
                    checkpoints=checkpoints, data_root=data_root, suites=tuple(suites),
                    transforms=transforms, recipes=tuple(recipes), probe=probe, assess=assess,
                    workers=workers, added=tuple(added), labels=labels,
                    layers={mid: layers for mid, (_, layers) in own_layers.items()})


def labels_spec(path) -> LabelsSpec:
    """The ``[labels]`` table of the spec at ``path``, validated on its own (the labelling
    page reads it from a store's recorded spec); SpecError for a bad one."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read the pipeline spec: {exc.strerror}", file=path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"not valid TOML: {exc}", file=path) from exc
    problems = _Problems(path)
    labels = _labels(raw, problems)
    problems.raise_if_any()
    return labels


# ----------------------------------------------------------------------------- parts
def _labels(raw, problems) -> LabelsSpec:
    tab = _table(raw, "labels", problems)
    _unknown_keys(tab, {f.name for f in fields(LabelsSpec)}, "labels.", problems)
    if "guideline" not in tab:
        return LabelsSpec()
    text = tab["guideline"]
    if not isinstance(text, str):
        problems.add("labels.guideline", f"expected a text (a TOML string), got {text!r}")
    elif not text.strip():
        problems.add("labels.guideline", "is empty: leave it out for the default, or say "
                     "what 'invariant' means for this database")
    elif len(text) > GUIDELINE_MAX:
        problems.add("labels.guideline", f"expected at most {GUIDELINE_MAX} characters, got "
                     f"{len(text)}")
    else:
        return LabelsSpec(guideline=text.strip())
    return LabelsSpec()


def _suites(raw, problems) -> list[SuiteSpec]:
    from ml4ml.data.suites import suite_names

    tab = _table(raw, "suites", problems)
    if not tab:
        problems.add("suites", "at least one test suite is required, e.g. [suites.digits]")
    out = []
    known = suite_names()
    for name, spec in tab.items():
        where = f"suites.{name}"
        if not isinstance(spec, dict):
            problems.add(where, "expected a table like {split = \"test\", n_samples = 500}")
            continue
        _unknown_keys(spec, {"split", "n_samples", "seed"}, where + ".", problems)
        if name not in known:
            problems.add(where, f"unknown suite {name!r}; known: {', '.join(known)}"
                         + _did_you_mean(name, known))
        split = spec.get("split", "test")
        if split not in ("train", "test"):
            problems.add(where + ".split", f"expected 'train' or 'test', got {split!r}")
        n_samples = spec.get("n_samples")
        if n_samples is not None and (not _is_int(n_samples) or n_samples < 2):
            problems.add(where + ".n_samples", f"expected an integer >= 2, got {n_samples!r}")
        seed = spec.get("seed", 0)
        if not _is_int(seed):
            problems.add(where + ".seed", f"expected an integer, got {seed!r}")
        out.append(SuiteSpec(name=name, split=split, n_samples=n_samples, seed=seed))
    return out


def _transforms(raw, problems) -> dict:
    from ml4ml.errors import InputError
    from ml4ml.probe.transforms import get_transform, validate_grid

    tab = _table(raw, "transforms", problems)
    if not tab:
        problems.add("transforms", "at least one transform is required, e.g. "
                     "[transforms.rotation] grid = [-15, 15, 31]")
    out = {}
    for name, spec in tab.items():
        where = f"transforms.{name}"
        if not isinstance(spec, dict):
            problems.add(where, "expected a table with 'grid = [start, stop, num]' or 'values'")
            continue
        _unknown_keys(spec, {"grid", "values"}, where + ".", problems)
        try:
            get_transform(name)
        except InputError as exc:
            problems.add(where, exc.message)
            continue
        if ("grid" in spec) == ("values" in spec):
            problems.add(where, "give exactly one of 'grid = [start, stop, num]' or 'values = [...]'")
            continue
        if "grid" in spec:
            g = spec["grid"]
            if (not isinstance(g, list) or len(g) != 3 or not all(_is_num(v) for v in g)
                    or not _is_int(g[2])):
                problems.add(where + ".grid", f"expected [start, stop, num], got {g!r}")
                continue
            values = np.linspace(float(g[0]), float(g[1]), int(g[2]))
        else:
            v = spec["values"]
            if not isinstance(v, list) or not all(_is_num(x) for x in v):
                problems.add(where + ".values", f"expected a list of numbers, got {v!r}")
                continue
            values = np.asarray(v, dtype=np.float64)
        try:
            values = validate_grid(name, values)
        except InputError as exc:
            problems.add(where + (".grid" if "grid" in spec else ".values"), exc.message)
            continue
        out[name] = np.asarray(values, dtype=np.float64)
    return out


def _cluster(raw, problems) -> int | None:
    """``[cluster] workers``: N, or "auto" (one per core; in process on one core)."""
    import os

    tab = _table(raw, "cluster", problems)
    _unknown_keys(tab, {"workers"}, "cluster.", problems)
    workers = tab.get("workers")
    if workers is None:
        return None
    if workers == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
        return cores if cores > 1 else None
    if not _is_int(workers) or workers < 1:
        problems.add("cluster.workers", f"expected a positive integer or \"auto\", got "
                     f"{workers!r}")
        return None
    return workers


def _probe(raw, problems) -> ProbeSpec:
    tab = _table(raw, "probe", problems)
    _unknown_keys(tab, {"layers", "batch_size", "device", "fgsm_epsilon"}, "probe.", problems)
    layers = tab.get("layers", [])
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        problems.add("probe.layers", f"expected a list of module names, got {layers!r}")
        layers = []
    batch_size = tab.get("batch_size", 256)
    if not _is_int(batch_size) or batch_size < 1:
        problems.add("probe.batch_size", f"expected a positive integer, got {batch_size!r}")
    device = tab.get("device", "cpu")
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        problems.add("probe.device", f"expected 'cpu' or 'cuda[:N]', got {device!r}")
    eps = tab.get("fgsm_epsilon", 0.0)
    if not _is_num(eps) or eps < 0:
        problems.add("probe.fgsm_epsilon", f"expected a number >= 0, got {eps!r}")
    return ProbeSpec(layers=tuple(layers), batch_size=batch_size, device=device,
                     fgsm_epsilon=float(eps) if _is_num(eps) else 0.0)


def _assess(raw, transforms, suites, problems, base=None) -> AssessSpec:
    tab = _table(raw, "assess", problems)
    _unknown_keys(tab, {f.name for f in fields(AssessSpec)}, "assess.", problems)
    default_transform = next(iter(transforms), "rotation")
    spec = AssessSpec(transform=default_transform)
    values = {}
    for key, value in tab.items():
        if key in ("assessors",):
            if not isinstance(value, list) or not value:
                problems.add("assess.assessors", f"expected a non-empty list, got {value!r}")
                continue
            bad = [a for a in value if a not in ASSESSORS]
            if bad:
                problems.add("assess.assessors", f"unknown assessor(s) {bad}; known: "
                             f"{', '.join(ASSESSORS)}")
                continue
            values[key] = tuple(value)
        elif key == "repeats":
            if not _is_int(value) or value < 1:
                problems.add("assess.repeats", f"expected a positive integer, got {value!r}")
                continue
            values[key] = value
        elif key in {f.name for f in fields(AssessSpec)}:
            values[key] = value
    spec = replace(spec, **values)
    if spec.transform not in transforms and transforms:
        problems.add("assess.transform", f"{spec.transform!r} is not one of the pipeline's "
                     f"transforms ({', '.join(transforms)})")
    if not isinstance(spec.label_source, str) or not spec.label_source:
        problems.add("assess.label_source", f"expected 'recipe', 'store' or a label file, "
                     f"got {spec.label_source!r}")
    elif spec.label_source not in LABEL_SOURCES:
        file = Path(_resolve(spec.label_source, base or Path(".")))
        if not file.is_file():
            problems.add("assess.label_source", f"expected 'recipe', 'store' or a label "
                         f"file; no file {str(file)!r}")
        else:
            spec = replace(spec, label_source=str(file))
    if spec.suite and spec.suite not in [s.name for s in suites]:
        problems.add("assess.suite", f"{spec.suite!r} is not one of the pipeline's suites")
    return spec


ZOO_KEYS = {"defaults", "grids", "models", "sample", "checkpoints"}
# fields of a model trained elsewhere ([[zoo.models]] with checkpoint, [zoo.checkpoints])
ADDED_FIELDS = {"mid", "checkpoint", "arch", "holdout", "partition", "normalize_mean",
                "normalize_std", LAYERS, "trust"}


def _zoo(raw, problems, base=Path(".")) -> tuple[list[Recipe], list, dict]:
    """Expand ``[zoo]``: defaults + grids (cartesian) + sampled recipes + explicit models,
    and the models trained elsewhere (``checkpoint`` models, ``[zoo.checkpoints]``);
    {mid: (where, layers)} of the models that name their own layers."""
    tab = _table(raw, "zoo", problems)
    _unknown_keys(tab, ZOO_KEYS | RECIPE_FIELDS, "zoo.", problems)
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
        recipe = _make_recipe(merged, where, problems, fields_origin)
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
    import glob as globbing

    from ml4ml.zoo.adding import AddedModel

    if not isinstance(tab, dict):
        problems.add(where, "expected a table with checkpoint (or glob), arch, holdout, ...")
        return []
    is_glob = where == "zoo.checkpoints"
    _unknown_keys(tab, (ADDED_FIELDS - {"checkpoint", "mid"} | {"glob"}) if is_glob
                  else ADDED_FIELDS, where + ".", problems)
    key = "glob" if is_glob else "checkpoint"
    pattern = tab.get(key)
    if not isinstance(pattern, str) or not pattern:
        problems.add(f"{where}.{key}", "expected a file path (relative to this spec), e.g. "
                     + ("\"models/*.pt\"" if is_glob else "\"models/net.pt\""))
        return []
    values = {}
    for name in ("arch", "partition"):
        if name in tab and not isinstance(tab[name], str):
            problems.add(f"{where}.{name}", f"expected a string, got {tab[name]!r}")
        values[name] = tab.get(name, "") if isinstance(tab.get(name, ""), str) else ""
    for name in ("normalize_mean", "normalize_std"):
        v = tab.get(name, [])
        if not isinstance(v, list) or not all(_is_num(x) for x in v):
            problems.add(f"{where}.{name}", f"expected a list of numbers (one per channel), "
                         f"got {v!r}")
            v = []
        values[name] = tuple(float(x) for x in v)
    if len(values["normalize_mean"]) != len(values["normalize_std"]):
        problems.add(f"{where}.normalize_std", "normalize_mean and normalize_std need one "
                     "value per channel each")
    layers = parse_layers(tab.get(LAYERS), f"{where}.{LAYERS}", problems)
    arch = values["arch"]
    if arch.startswith("module:"):
        _check_module_arch(arch, base, f"{where}.arch", problems)
    for name in ("holdout", "trust"):
        if name in tab and not isinstance(tab[name], bool):
            problems.add(f"{where}.{name}", f"expected true or false, got {tab[name]!r}")
    if is_glob:
        full = _resolve(pattern, base)
        files = sorted(globbing.glob(full)) if "://" not in full else []
        if not files:
            problems.add(f"{where}.glob", f"no file matches {full!r}")
        pairs = [(Path(f).stem, f) for f in files]
    else:
        mid = tab.get("mid", Path(pattern).stem)
        pairs = [(mid, _resolve(pattern, base))]
    out = []
    for mid, file in pairs:
        if not isinstance(mid, str) or not mid or not mid.replace("_", "").replace(
                "-", "").isalnum():
            problems.add(f"{where}.mid", f"expected letters, digits, '-' or '_', got {mid!r}")
            continue
        holdout = tab.get("holdout", mid.startswith("t"))
        if holdout is not None and bool(holdout) != mid.startswith("t"):
            problems.add(f"{where}.mid", f"hold-out ids start with 't' and only they do; got "
                         f"{mid!r} with holdout = {str(bool(holdout)).lower()}")
        out.append(AddedModel(mid=mid, checkpoint=file, arch=arch, holdout=bool(holdout),
                              partition=values["partition"],
                              normalize_mean=values["normalize_mean"],
                              normalize_std=values["normalize_std"], base=str(base),
                              layers=layers, where=where,
                              trusted=tab.get("trust") is True))
    return out


def _check_module_arch(arch, base, where, problems) -> None:
    """A ``module:<package.module>:<Class>`` arch imports (relative to the spec's folder)."""
    import importlib

    from ml4ml.zoo.checkpoints import import_path

    parts = arch.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        problems.add(where, f"expected 'module:<package.module>:<Class>', got {arch!r}")
        return
    try:
        with import_path(str(base)):
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
    _unknown_keys(sample, {"n_regular", "n_holdout", "seed", "choices"}, where + ".", problems)
    n_regular, n_holdout = sample.get("n_regular", 0), sample.get("n_holdout", 0)
    for key, value in (("n_regular", n_regular), ("n_holdout", n_holdout)):
        if not _is_int(value) or value < 0:
            problems.add(f"{where}.{key}", f"expected an integer >= 0, got {value!r}")
            return []
    choices = sample.get("choices", {})
    if not isinstance(choices, dict):
        problems.add(where + ".choices", "expected a table: field = [values to draw from]")
        return []
    for key, options in choices.items():
        if key not in RECIPE_FIELDS:
            problems.add(f"{where}.choices.{key}", "not a recipe field" +
                         _did_you_mean(key, sorted(RECIPE_FIELDS)))
            return []
        if not isinstance(options, list) or not options:
            problems.add(f"{where}.choices.{key}", "expected a non-empty list of values")
            return []
        for opt in options:
            if isinstance(opt, dict):
                _recipe_keys(opt, f"{where}.choices.{key}[].", problems)
    rng = np.random.RandomState(sample.get("seed", 0) if _is_int(sample.get("seed", 0)) else 0)
    out = []
    for k in range(n_regular + n_holdout):
        values = {"holdout": k >= n_regular}
        for key, options in choices.items():
            pick = options[rng.randint(len(options))]
            if isinstance(pick, dict):
                values.update(pick)
            else:
                values[key] = pick
        out.append((f"{where} (model {k})", values))
    return out


_LIST_FIELDS = {"normalize_mean", "normalize_std", "anomaly_removed"}


def _make_recipe(values: dict, where: str, problems, origin=None) -> Recipe | None:
    """Coerce and check one recipe's fields; None (with problems noted) if invalid.

    origin : field -> the table it was inherited from (reported there, once).
    """
    ok = True
    origin = origin or {}

    def bad(name, why):
        nonlocal ok
        ok = False
        problems.add(f"{origin.get(name, where)}.{name}", why)

    out = {}
    for f in fields(Recipe):
        if f.name not in values:
            continue
        v = values[f.name]
        if f.name in ("mid", "arch", "train_suite", "augmentation", "optimizer", "pretrained",
                      "partition"):
            if not isinstance(v, str):
                bad(f.name, f"expected a string, got {v!r}")
                continue
        elif f.name in ("epochs", "batch_size", "anomaly", "anomaly_class", "seed", "n_train"):
            if not _is_int(v):
                bad(f.name, f"expected an integer, got {v!r}")
                continue
        elif f.name in ("aug_range", "lr", "fgsm_epsilon", "anomaly_fraction"):
            if not _is_num(v):
                bad(f.name, f"expected a number, got {v!r}")
                continue
            v = float(v)
        elif f.name == "holdout":
            if not isinstance(v, bool):
                bad(f.name, f"expected true or false, got {v!r}")
                continue
        elif f.name in ("normalize_mean", "normalize_std"):
            if not isinstance(v, list) or not all(_is_num(x) for x in v):
                bad(f.name, f"expected a list of numbers (one per channel), got {v!r}")
                continue
            v = tuple(float(x) for x in v)
        elif f.name == "anomaly_removed":
            if not isinstance(v, list) or not all(
                    isinstance(x, list) and len(x) == 2 and all(_is_num(y) for y in x)
                    and x[0] < x[1] for x in v):
                bad(f.name, f"expected a list of [low, high] intervals, got {v!r}")
                continue
            v = tuple((float(x[0]), float(x[1])) for x in v)
        out[f.name] = v
    if not ok:
        return None
    recipe = Recipe(**out)
    if not recipe.mid or not recipe.mid.replace("_", "").replace("-", "").isalnum():
        bad("mid", f"expected letters, digits, '-' or '_', got {recipe.mid!r}")
    if recipe.holdout != recipe.mid.startswith("t"):
        bad("mid", f"hold-out ids start with 't' and only they do; got {recipe.mid!r} with "
            f"holdout = {str(recipe.holdout).lower()}")
    arch = recipe.arch
    if not (arch in BUILTIN_ARCHS or arch.startswith("torchvision:")
            or (arch.startswith("module:") and arch.count(":") == 2)):
        bad("arch", f"expected one of {', '.join(BUILTIN_ARCHS)}, 'torchvision:<name>' or "
            f"'module:<package.module>:<Class>', got {arch!r}")
    elif arch.startswith("module:"):
        _check_module_arch(arch, getattr(problems, "base", Path(".")), f"{where}.arch",
                           problems)
    elif arch.startswith("torchvision:"):
        import torchvision

        tv_name = arch.split(":", 1)[1]
        known = torchvision.models.list_models(module=torchvision.models)
        if tv_name not in known:
            bad("arch", f"torchvision has no classification model {tv_name!r}"
                + _did_you_mean(tv_name, known))
    from ml4ml.data.suites import suite_names

    if recipe.train_suite not in suite_names():
        bad("train_suite", f"unknown suite {recipe.train_suite!r}; known: "
            f"{', '.join(suite_names())}")
    if recipe.augmentation not in AUGMENTATIONS:
        bad("augmentation", f"expected one of {AUGMENTATIONS}, got {recipe.augmentation!r}")
    if recipe.aug_range < 0 or (recipe.augmentation in ("scaling", "brightness")
                                and recipe.aug_range >= 1):
        bad("aug_range", "expected >= 0 (degrees for rotation, a in 1 +- a < 1 for "
            f"scaling/brightness), got {recipe.aug_range!r}")
    if recipe.epochs < 1:
        bad("epochs", f"expected >= 1, got {recipe.epochs}")
    if not recipe.lr > 0:
        bad("lr", f"expected > 0, got {recipe.lr}")
    if recipe.batch_size < 1:
        bad("batch_size", f"expected >= 1, got {recipe.batch_size}")
    if recipe.optimizer not in OPTIMIZERS:
        bad("optimizer", f"expected one of {OPTIMIZERS}, got {recipe.optimizer!r}")
    if recipe.fgsm_epsilon < 0:
        bad("fgsm_epsilon", f"expected >= 0, got {recipe.fgsm_epsilon}")
    if recipe.anomaly not in ANOMALIES:
        bad("anomaly", f"expected a code 0..8 ({', '.join(f'{k} {v}' for k, v in ANOMALIES.items())}), "
            f"got {recipe.anomaly}")
    elif recipe.anomaly in (2, 3, 5, 7, 8) and not 0 < recipe.anomaly_fraction <= 1:
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
    if recipe.n_train < 0:
        bad("n_train", f"expected >= 0, got {recipe.n_train}")
    return recipe if ok else None


# --------------------------------------------------------------------------- helpers
def _table(raw: dict, key: str, problems) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.add(key, f"expected a table [{key}], got {type(value).__name__}")
        return {}
    return value


def _unknown_keys(tab: dict, allowed: set, prefix: str, problems) -> None:
    for key in tab:
        if key not in allowed:
            problems.add(prefix + key, "unknown field" + _did_you_mean(key, sorted(allowed)))


def _recipe_keys(tab: dict, prefix: str, problems) -> None:
    _unknown_keys(tab, RECIPE_FIELDS, prefix, problems)


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _resolve(value: str, base: Path) -> str:
    if "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _checkpoints(value: str):
    """A local checkpoint folder as a Path; a URL (beside a store at a URL) as it is."""
    return value if "://" in value else Path(value)


def shrink_pipeline(pipeline: Pipeline, *, store: str, data_root=None, n_models: int = 3,
                    epochs: int = 1, n_train: int = 0, n_samples: int | None = None,
                    checkpoints=None) -> Pipeline:
    """A smoke-test copy of ``pipeline``: its first ``n_models`` recipes (regular first,
    then one hold-out), ``epochs`` each, on ``n_train`` training images and ``n_samples``
    test samples, writing to ``store``. Everything else (arch, grids, anomalies) is kept.
    """
    regular = [r for r in pipeline.recipes if not r.holdout]
    holdout = [r for r in pipeline.recipes if r.holdout]
    chosen = regular[: max(n_models - 1, 1)] + holdout[: n_models - max(n_models - 1, 1)]
    recipes = tuple(replace(r, epochs=epochs, n_train=n_train or r.n_train) for r in chosen)
    suites = tuple(replace(s, n_samples=n_samples or s.n_samples) for s in pipeline.suites)
    return replace(pipeline, store=store, recipes=recipes, suites=suites,
                   data_root=Path(data_root) if data_root is not None else pipeline.data_root,
                   checkpoints=_checkpoints(str(checkpoints or str(store).rstrip("/")
                                                + ".checkpoints")))
