"""The spec's JSON Schema: printed by ``ml4ml spec schema``, committed as
docs/spec.schema.json, named by every spec in pipelines/, and as strict as ``ml4ml
validate`` on what it can know (issue 26.3)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from ml4ml.cli import cli
from ml4ml.config import load_pipeline, spec_json_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "docs" / "spec.schema.json"
SPECS = sorted((ROOT / "pipelines").glob("*.toml"))
DIRECTIVE = "#:schema ../docs/spec.schema.json"

BASE = """\
name = "broken"

[store]
path = "s.zarr"
precision = "float32"

[cluster]
workers = 2

[suites.digits]
split = "test"
n_samples = 100
seed = 0

[transforms.rotation]
grid = [-15, 15, 5]

[zoo]
arch = "cnn5"
train_suite = "digits"
augmentation = "rotation"
epochs = 2
lr = 1e-3
optimizer = "adam"
anomaly = 0
holdout = false
normalize_mean = [0.5]
normalize_std = [0.25]

[[zoo.grids]]
aug_range = [0, 15]

[probe]
batch_size = 64
device = "cpu"

[assess]
assessors = ["decision_tree", "linear"]
repeats = 3

[labels]
guideline = "Invariant: the accuracy stays up across the range."
"""

# (what is broken, the spec text's change (old, new), the field ``ml4ml validate`` names,
# the spec table the schema's error lies in ("" for the document itself)); names a user may
# register (suites, transforms) are left out: the schema cannot know them
BROKEN = [
    ("missing required table", ('[store]\npath = "s.zarr"\nprecision = "float32"\n', ""),
     "store.path", ""),
    ("missing required field", ('path = "s.zarr"\n', ""), "store.path", "store"),
    ("unknown enum value", ('precision = "float32"', 'precision = "float16"'),
     "store.precision", "store"),
    ("unknown top-level key", ('name = "broken"', 'name = "broken"\nstor = 1'), "stor", ""),
    ("wrong type", ("workers = 2", "workers = 2.5"), "cluster.workers", "cluster"),
    ("out of range", ("workers = 2", "workers = 0"), "cluster.workers", "cluster"),
    ("unknown enum value", ('split = "test"', 'split = "validation"'), "suites.digits.split",
     "suites"),
    ("out of range", ("n_samples = 100", "n_samples = 1"), "suites.digits.n_samples",
     "suites"),
    ("wrong type", ("seed = 0\n\n[transforms", 'seed = "zero"\n\n[transforms'),
     "suites.digits.seed", "suites"),
    ("wrong length", ("grid = [-15, 15, 5]", "grid = [-15, 15]"), "transforms.rotation.grid",
     "transforms"),
    ("unknown key", ("grid = [-15, 15, 5]", "grid = [-15, 15, 5]\nstep = 1"),
     "transforms.rotation.step", "transforms"),
    ("out of range", ("epochs = 2", "epochs = 0"), "zoo.epochs", "zoo"),
    ("out of range (exclusive)", ("lr = 1e-3", "lr = -1e-3"), "zoo.lr", "zoo"),
    ("unknown enum value", ('optimizer = "adam"', 'optimizer = "rmsprop"'), "zoo.optimizer",
     "zoo"),
    ("out of range", ("anomaly = 0", "anomaly = 9"), "zoo.anomaly", "zoo"),
    ("wrong type", ("holdout = false", 'holdout = "no"'), "zoo.holdout", "zoo"),
    ("wrong item type", ("normalize_mean = [0.5]", 'normalize_mean = ["half"]'),
     "zoo.normalize_mean", "zoo"),
    ("unknown architecture", ('arch = "cnn5"', 'arch = "alexnet"'), "zoo.arch", "zoo"),
    ("unknown key in a grid", ("aug_range = [0, 15]", "aug_range = [0, 15]\nepoch = [1, 2]"),
     "zoo.grids[0].epoch", "zoo"),
    ("out of range", ("batch_size = 64", "batch_size = 0"), "probe.batch_size", "probe"),
    ("pattern", ('device = "cpu"', 'device = "tpu"'), "probe.device", "probe"),
    ("unknown enum value in a list", ('assessors = ["decision_tree", "linear"]',
                                      'assessors = ["decision_tree", "svm"]'),
     "assess.assessors", "assess"),
    ("wrong type", ("repeats = 3", "repeats = 1.5"), "assess.repeats", "assess"),
    ("too long", ('guideline = "Invariant: the accuracy stays up across the range."',
                  'guideline = "' + "x" * 4001 + '"'), "labels.guideline", "labels"),
]


@pytest.fixture(scope="module")
def printed_schema() -> dict:
    result = CliRunner().invoke(cli, ["spec", "schema"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_printed_schema_is_a_valid_json_schema_and_the_committed_one(printed_schema):
    jsonschema.Draft7Validator.check_schema(printed_schema)
    assert printed_schema == spec_json_schema()
    assert json.loads(SCHEMA_FILE.read_text()) == printed_schema, (
        "docs/spec.schema.json is stale: run 'ml4ml spec schema -o docs/spec.schema.json'")
    # the tables and recipe fields are all there, with what an editor shows
    assert set(printed_schema["properties"]) == {
        "name", "description", "store", "data", "suites", "transforms", "zoo", "probe",
        "cluster", "assess", "labels"}
    assert set(printed_schema["required"]) == {"store", "suites", "transforms", "zoo"}
    recipe = printed_schema["$defs"]["RecipeFields"]["properties"]
    assert recipe["optimizer"]["enum"] == ["adam", "sgd"]
    assert recipe["anomaly"]["minimum"] == 0 and recipe["anomaly"]["maximum"] == 8
    assert recipe["lr"]["exclusiveMinimum"] == 0
    assert "hold-out ids start with 't'" in recipe["mid"]["description"]


def test_ml4ml_spec_schema_writes_the_same_file(tmp_path):
    out = tmp_path / "schema.json"
    done = subprocess.run([sys.executable, "-m", "ml4ml", "spec", "schema", "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == SCHEMA_FILE.read_text()


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_names_the_schema_and_validates_against_it(spec, printed_schema):
    first = spec.read_text().splitlines()[0]
    assert first == DIRECTIVE
    assert (spec.parent / first.split(" ", 1)[1]).resolve() == SCHEMA_FILE
    data = tomllib.loads(spec.read_text())
    errors = list(jsonschema.Draft7Validator(printed_schema).iter_errors(data))
    assert errors == []
    assert len(load_pipeline(spec).mids) == 150


def test_the_base_of_the_broken_specs_is_valid(tmp_path, printed_schema):
    file = tmp_path / "broken.toml"
    file.write_text(BASE)
    jsonschema.Draft7Validator(printed_schema).validate(tomllib.loads(BASE))
    result = CliRunner().invoke(cli, ["validate", str(file)])
    assert result.exit_code == 0, result.output
    assert "ok: 2 models (2 regular, 0 hold-out)" in result.output


def test_twenty_broken_specs_are_refused_by_the_schema_and_by_validate(tmp_path,
                                                                       printed_schema):
    assert len(BROKEN) >= 20
    validator = jsonschema.Draft7Validator(printed_schema)
    for k, (what, (old, new), field, table) in enumerate(BROKEN):
        assert BASE.count(old) == 1, what
        text = BASE.replace(old, new)
        errors = list(validator.iter_errors(tomllib.loads(text)))
        assert errors, f"the schema accepts: {what} ({field})"
        assert any(list(e.absolute_path)[:1] == ([table] if table else [])
                   for e in errors), (what, [(list(e.absolute_path), e.message)
                                             for e in errors])
        file = tmp_path / f"broken{k}.toml"
        file.write_text(text)
        result = CliRunner().invoke(cli, ["validate", str(file)])
        assert result.exit_code != 0, f"validate accepts: {what} ({field})"
        assert "Traceback" not in result.output
        assert f"{file}: field '{field}': " in result.output, (what, result.output)


def test_registered_names_pass_the_schema_and_validate(tmp_path, printed_schema):
    """Suites and transforms a user registers are plain strings to the schema and are
    checked against the registries by validate."""
    from ml4ml.data.suites import SUITE_LOADERS, register_suite
    from ml4ml.probe.transforms import _REGISTRY, Transform, register_transform

    text = (BASE.replace("[suites.digits]", "[suites.mine]")
            .replace('train_suite = "digits"', 'train_suite = "mine"')
            .replace("[transforms.rotation]\ngrid = [-15, 15, 5]",
                     "[transforms.posterize]\nvalues = [-2, -1, 0, 1, 2]"))
    file = tmp_path / "mine.toml"
    file.write_text(text)
    validator = jsonschema.Draft7Validator(printed_schema)
    assert list(validator.iter_errors(tomllib.loads(text))) == []
    with pytest.raises(Exception, match="unknown suite 'mine'; known: cifar10, cifar100"):
        load_pipeline(file)
    register_suite("mine", lambda split, root=None, download=False: None)
    register_transform(Transform("posterize", "levels", 0.0, lambda images, params: images))
    try:
        pipeline = load_pipeline(file)
        assert [s.name for s in pipeline.suites] == ["mine"]
        assert pipeline.transforms["posterize"].tolist() == [-2, -1, 0, 1, 2]
        assert {r.train_suite for r in pipeline.recipes} == {"mine"}
    finally:
        SUITE_LOADERS.pop("mine")
        _REGISTRY.pop("posterize")


LOW = ("ml4ml.errors", "ml4ml.dims", "ml4ml.store", "ml4ml.progress", "ml4ml.spec",
       "ml4ml.config")


def test_the_spec_layer_imports_no_stage():
    """config and spec import only the bottom layer and each other (read with ast), and
    loading a spec imports no stage (nor torch)."""
    files = [ROOT / "ml4ml" / "config.py", *sorted((ROOT / "ml4ml" / "spec").glob("*.py"))]
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{a.name}" if node.module == "ml4ml" else node.module
                 for a in node.names] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name and name.startswith("ml4ml"):
                    assert name.startswith(LOW), f"{file.name} imports {name}"
    code = ("import sys; from ml4ml.config import load_pipeline; "
            "p = load_pipeline('pipelines/demo-digits.toml'); "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
            "[['ml4ml', s] for s in ('data', 'zoo', 'probe', 'measure', 'assess', 'report', "
            "'labelling', 'cli')] or m == 'torch'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
