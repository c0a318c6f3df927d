"""The tables of a spec besides the zoo, each validated by its model (``spec.schema``) and
then checked against what the schema cannot know: registered suite and transform names,
the grid of each transform, files, and how the tables refer to each other.

Each ``read_<table>(raw, problems, ...)`` returns the table's value for ``Pipeline`` (its
defaults where the table is broken: the problems are raised together at the end).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ml4ml.errors import InputError
from ml4ml.spec import registry
from ml4ml.spec.messages import check_part, check_table, did_you_mean, table
from ml4ml.spec.schema import (ASSESSORS, AssessTable, ClusterTable, LabelsTable, ProbeTable,
                               SuiteTable, TransformTable)

# where ``run`` takes labels from: the recipe proxy, the labels in the store (the current
# source, e.g. merged expert ratings), or a label file (a path, relative to the spec)
LABEL_SOURCES = ("recipe", "store")


# the fields of an own suite (``[suites.<name>] kind = ...``); ``data.own.OWN_FIELDS``
OWN_KEYS = ("kind", "root", "path", "size", "channels", "classes", "layout")


@dataclass(frozen=True)
class SuiteSpec:
    """A test suite to probe on: ``suites.load_suite(name, split, n_samples=, seed=)``, or,
    with ``kind``, your own images (``data.own.load_own_suite``; ``root``/``path`` resolved
    against the spec's folder, ``size`` and ``classes`` tuples)."""

    name: str
    split: str = "test"
    n_samples: int | None = None
    seed: int = 0
    kind: str | None = None  # None: built-in or registered; "imagefolder" or "npz": own
    root: str | None = None
    path: str | None = None
    size: tuple | None = None
    channels: int | None = None
    classes: tuple | None = None
    layout: str | None = None
    # the probe stage's: the content digest it found (``data.own.suite_digest``), "" unknown
    digest: str = ""

    @property
    def own(self) -> bool:
        """Whether this is a suite of the user's own images."""
        return self.kind is not None


@dataclass(frozen=True)
class ProbeSpec:
    layers: tuple = ()  # module names; () = the last two convolutions (zoo.layers)
    batch_size: int = 256
    device: str = "cpu"
    fgsm_epsilon: float = 0.0
    lie_derivative: bool = False  # also the Lie derivative per sample (probe.lie)
    units: str = "none"  # "channel": record every channel's spatial mean (probes' unit)


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


def _named_tables(raw, key: str, problems, empty: str, not_table: str):
    """(name, field path, table) of each ``[key.<name>]`` table; a problem (``empty``,
    ``not_table``) for none at all and for each entry that is not a table."""
    tab = table(raw, key, problems)
    if not tab:
        problems.add(key, empty)
    for name, spec in tab.items():
        where = f"{key}.{name}"
        if not isinstance(spec, dict):
            problems.add(where, not_table)
            continue
        yield name, where, spec


def read_labels(raw, problems) -> LabelsSpec:
    tab = table(raw, "labels", problems)
    labels = check_table(LabelsTable, tab, "labels.", problems)
    if labels is None or "guideline" not in tab:
        return LabelsSpec()
    return LabelsSpec(guideline=labels.guideline.strip())


def read_suites(raw, problems) -> list[SuiteSpec]:
    out = []
    known = registry.suite_names()
    for name, where, spec in _named_tables(
            raw, "suites", problems,
            "at least one test suite is required, e.g. [suites.digits]",
            "expected a table like {split = \"test\", n_samples = 500}"):
        suite = check_part(SuiteTable, spec, where + ".", problems)
        if "kind" in spec:
            out.append(_own_suite(name, where, spec, suite, known, problems))
            continue
        given = [k for k in OWN_KEYS if k in spec]
        if given and name not in known:
            problems.add(f"{where}.kind", f"your own images need kind = \"imagefolder\" "
                         f"(with root) or kind = \"npz\" (with path); {given[0]!r} given")
        elif given:
            problems.add(f"{where}.{given[0]}", f"{given[0]!r} is for your own images "
                         f"(kind = \"imagefolder\" or \"npz\"), not built-in suite {name!r}")
        elif name not in known:
            problems.add(where, f"unknown suite {name!r}; known: {', '.join(known)}"
                         + did_you_mean(name, known) + "; or your own images: kind = "
                         "\"imagefolder\" with root, or kind = \"npz\" with path")
        out.append(SuiteSpec(name=name, split=suite.split, n_samples=suite.n_samples,
                             seed=suite.seed))
    return out


def _own_suite(name, where, spec, suite, known, problems) -> SuiteSpec:
    """The SuiteSpec of ``[suites.<name>] kind = ...`` (the table already checked by its
    model: here what fields need of each other); its paths resolved against the spec."""
    kind = suite.kind or str(spec.get("kind"))  # a bad kind is already a problem
    if name in known:
        problems.add(where, f"{name!r} is a built-in or registered suite; name your own "
                     f"images otherwise, e.g. [suites.my-{name}]")
    if suite.split != "test":
        problems.add(f"{where}.split", "your own images are a test suite: split = \"test\" "
                     "(or leave it out)")
    need, other = ("root", "path") if kind == "imagefolder" else ("path", "root")
    if kind in ("imagefolder", "npz"):
        if need not in spec:
            problems.add(f"{where}.{need}", f"kind {kind!r} needs {need}: " + (
                "the folder holding one folder per class" if need == "root" else
                "the .npz file with arrays images and labels") + " (relative to this spec)")
        if other in spec:
            problems.add(f"{where}.{other}", f"kind {kind!r} takes {need}, not {other}")
        if kind == "imagefolder" and "layout" in spec:
            problems.add(f"{where}.layout", "layout applies to kind 'npz' only")
    classes = spec.get("classes")
    if isinstance(classes, list):
        twice = sorted({c for c in classes if isinstance(c, str) and classes.count(c) > 1})
        if twice:
            problems.add(f"{where}.classes", f"names appear twice: {twice}")
    base = problems.base or Path(".")
    located = {k: resolve(getattr(suite, k), Path(base)) for k in ("root", "path")
               if getattr(suite, k)}
    return SuiteSpec(name=name, split="test", n_samples=suite.n_samples, seed=suite.seed,
                     kind=kind, root=located.get("root"), path=located.get("path"),
                     size=None if suite.size is None else tuple(suite.size),
                     channels=suite.channels,
                     classes=None if suite.classes is None else tuple(suite.classes),
                     layout=suite.layout)


def read_transforms(raw, problems) -> dict:
    """{name: grid (aug_param,) float64} of ``[transforms]``."""
    out = {}
    for name, where, spec in _named_tables(
            raw, "transforms", problems,
            "at least one transform is required, e.g. [transforms.rotation] grid = [-15, 15, 31]",
            "expected a table with 'grid = [start, stop, num]' or 'values'"):
        checked = check_table(TransformTable, spec, where + ".", problems)
        try:
            registry.transform_info(name)
        except InputError as exc:
            problems.add(where, exc.message)
            continue
        if ("grid" in spec) == ("values" in spec):
            problems.add(where, "give exactly one of 'grid = [start, stop, num]' or 'values = [...]'")
            continue
        if checked is None:
            continue
        if checked.grid is not None:
            g = spec["grid"]
            if isinstance(g[2], bool) or not isinstance(g[2], int):
                problems.add(where + ".grid", f"expected [start, stop, num], got {g!r}")
                continue
            values = np.linspace(float(g[0]), float(g[1]), int(g[2]))
        else:
            values = np.asarray(checked.values, dtype=np.float64)
        try:
            values = registry.check_grid(name, values)
        except InputError as exc:
            problems.add(where + (".grid" if "grid" in spec else ".values"), exc.message)
            continue
        out[name] = np.asarray(values, dtype=np.float64)
    return out


def read_cluster(raw, problems) -> int | None:
    """``[cluster] workers``: N, or "auto" (one per core; in process on one)."""
    tab = table(raw, "cluster", problems)
    cluster = check_table(ClusterTable, tab, "cluster.", problems)
    workers = cluster.workers if cluster is not None else None
    if workers == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
        return cores if cores > 1 else None
    return workers


def read_probe(raw, problems) -> ProbeSpec:
    tab = table(raw, "probe", problems)
    probe = check_part(ProbeTable, tab, "probe.", problems)
    return ProbeSpec(layers=tuple(probe.layers), batch_size=probe.batch_size,
                     device=probe.device, fgsm_epsilon=float(probe.fgsm_epsilon),
                     lie_derivative=bool(probe.lie_derivative), units=str(probe.units))


def read_interpolations(raw, transforms: dict, problems) -> dict:
    """{name: "bilinear"} of the transforms sampling otherwise than nearest (``[transforms.
    <name>] interpolation``); a family without that choice is a problem."""
    out = {}
    for name in transforms:
        spec = raw.get("transforms", {}).get(name, {})
        chosen = spec.get("interpolation", "nearest")
        if chosen == "nearest":
            continue
        choices = registry.INTERPOLATIONS.get(name, ("nearest",))
        if chosen not in choices or registry.transform_info(name).name not in \
                registry.BUILTIN_TRANSFORMS or _registered_apart(name):
            problems.add(f"transforms.{name}.interpolation",
                         f"transform {name!r} samples one way only; 'interpolation' is for "
                         f"rotation, scaling and translation ('nearest' or 'bilinear')")
            continue
        out[name] = chosen
    return out


def _registered_apart(name: str) -> bool:
    """Whether a user re-registered a built-in family's name with their own function."""
    family = registry.TRANSFORMS.get(name)
    apply = getattr(family, "apply", None)
    return apply is not None and not getattr(apply, "__module__", "").startswith(
        "ml4ml.probe.transforms")


def check_lie_derivative(transforms: dict, probe: ProbeSpec, problems) -> None:
    """With ``[probe] lie_derivative``, a problem for each transform without a derivative."""
    if not probe.lie_derivative:
        return
    for name in transforms:
        if not registry.has_derivative(name):
            why = registry.DERIVATIVE_MISSING.get(name) if not _registered_apart(name) \
                and name in registry.BUILTIN_TRANSFORMS else None
            problems.add(f"transforms.{name}", f"transform {name!r} has no derivative for "
                         f"[probe] lie_derivative: "
                         f"{why or 'it was registered without derivative='}")


def read_assess(raw, transforms, suites, problems, base=None) -> AssessSpec:
    tab = table(raw, "assess", problems)
    assess = check_part(AssessTable, tab, "assess.", problems, skip=("transform",))
    values = {k: getattr(assess, k) for k in assess.model_fields_set}
    if "transform" in tab:
        values["transform"] = tab["transform"]
    if "assessors" in values:
        values["assessors"] = tuple(values["assessors"])
    spec = replace(AssessSpec(transform=next(iter(transforms), "rotation")), **values)
    if "transform" in values and transforms and (not isinstance(spec.transform, str)
                                                 or spec.transform not in transforms):
        problems.add("assess.transform", f"{spec.transform!r} is not one of the pipeline's "
                     f"transforms ({', '.join(transforms)})")
    if spec.label_source not in LABEL_SOURCES:
        file = Path(resolve(spec.label_source, base or Path(".")))
        if not file.is_file():
            problems.add("assess.label_source", f"expected 'recipe', 'store' or a label "
                         f"file; no file {str(file)!r}")
        else:
            spec = replace(spec, label_source=str(file))
    if spec.suite and spec.suite not in [s.name for s in suites]:
        problems.add("assess.suite", f"{spec.suite!r} is not one of the pipeline's suites")
    return spec


def resolve(value: str, base: Path) -> str:
    """A spec's path, relative to the spec's folder (``base``); a URL as it is."""
    if "://" in value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())
