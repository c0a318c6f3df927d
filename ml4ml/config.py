"""Pipeline specs (TOML): load, validate, and expand the zoo into recipes.

``load_pipeline(path)`` returns a ``Pipeline`` or raises one ``SpecError`` that lists
every problem found, each as ``file: field 'x.y': why``. Relative paths in a spec are
relative to the spec file's folder. The spec is declared once as typed models in
``ml4ml.spec.schema`` (``spec_json_schema()``: its JSON Schema, ``ml4ml spec schema``);
``ml4ml.spec`` also holds how problems read (``messages``), the tables' readers
(``tables``, ``zoo``) and the names a spec may use (``registry``). This module imports
nothing from the stages.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from ml4ml.errors import SpecError
from ml4ml.spec.messages import Problems, check_table, table, unknown_keys
from ml4ml.spec.recipe import Recipe
from ml4ml.spec.schema import (ASSESSORS, BUILTIN_ARCHS, GUIDELINE_MAX, RECIPE_FIELDS,
                               TOP_KEYS, DataTable, StoreTable, spec_json_schema)
from ml4ml.spec.tables import (LABEL_SOURCES, AssessSpec, LabelsSpec, ProbeSpec, SuiteSpec,
                               check_lie_derivative, read_assess, read_cluster,
                               read_interpolations, read_labels, read_probe, read_suites,
                               read_transforms, resolve)
from ml4ml.spec.zoo import (DEFAULT_N_LAYERS, check_layer_counts, check_module_arch,
                            read_zoo)

__all__ = ["load_pipeline", "labels_spec", "shrink_pipeline", "Pipeline", "SuiteSpec",
           "ProbeSpec", "AssessSpec", "LabelsSpec", "spec_json_schema", "BUILTIN_ARCHS",
           "LABEL_SOURCES", "ASSESSORS", "GUIDELINE_MAX", "TOP_KEYS", "RECIPE_FIELDS"]

# the names other modules used before the spec had its own package
_Problems = Problems
_check_module_arch = check_module_arch


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
    # transform name -> "bilinear" where [transforms.<name>] interpolation says so
    interpolation: dict = field(default_factory=dict)

    @property
    def mids(self) -> list[str]:
        return [r.mid for r in self.recipes] + [a.mid for a in self.added]

    def recipe(self, mid: str) -> Recipe:
        for r in self.recipes:
            if r.mid == mid:
                return r
        raise KeyError(mid)


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"not valid TOML: {exc}", file=path) from exc


def load_pipeline(path) -> Pipeline:
    """Read and validate a pipeline spec; SpecError listing every problem otherwise."""
    path = Path(path)
    if path.is_dir():
        raise SpecError("is a folder, not a pipeline spec file", file=path,
                        hint="give a TOML file, e.g. pipelines/demo-digits.toml")
    if not path.is_file():
        raise SpecError("no such pipeline spec file", file=path)
    raw = _read_toml(path)
    base = path.parent
    problems = Problems(path, base=base)
    unknown_keys(raw, TOP_KEYS, "", problems)
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            problems.add(key, f"expected a string, got {raw[key]!r}")

    store_tab = table(raw, "store", problems)
    store_spec = check_table(StoreTable, store_tab, "store.", problems)
    if store_spec is None:  # the problems are raised below; go on to find the others
        store_spec = StoreTable.model_construct(path="missing.zarr", precision="float32",
                                                checkpoints="")
    store = resolve(store_spec.path, base)
    checkpoints = _checkpoints(resolve(store_spec.checkpoints, base) if store_spec.checkpoints
                               else str(store).rstrip("/") + ".checkpoints")
    data = check_table(DataTable, table(raw, "data", problems), "data.", problems)
    data_root = Path(resolve(data.root, base)) if data is not None and data.root else None

    suites = read_suites(raw, problems)
    transforms = read_transforms(raw, problems)
    recipes, added, own_layers = read_zoo(raw, problems, base)
    probe = read_probe(raw, problems)
    interpolation = read_interpolations(raw, transforms, problems)
    check_lie_derivative(transforms, probe, problems)
    check_layer_counts(own_layers, len(probe.layers) or DEFAULT_N_LAYERS, problems)
    workers = read_cluster(raw, problems)
    assess = read_assess(raw, transforms, suites, problems, base)
    labels = read_labels(raw, problems)
    problems.raise_if_any()
    return Pipeline(file=path, name=str(raw.get("name", path.stem)), store=store,
                    precision=store_spec.precision, checkpoints=checkpoints,
                    data_root=data_root, suites=tuple(suites), transforms=transforms,
                    recipes=tuple(recipes), probe=probe, assess=assess, workers=workers,
                    added=tuple(added), labels=labels, interpolation=interpolation,
                    layers={mid: layers for mid, (_, layers) in own_layers.items()})


def labels_spec(path) -> LabelsSpec:
    """The ``[labels]`` table of the spec at ``path``, validated on its own (the labelling
    page reads it from a store's recorded spec); SpecError for a bad one."""
    path = Path(path)
    try:
        path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read the pipeline spec: {exc.strerror}", file=path) from None
    problems = Problems(path)
    labels = read_labels(_read_toml(path), problems)
    problems.raise_if_any()
    return labels


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
