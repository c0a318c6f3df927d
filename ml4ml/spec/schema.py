"""The pipeline spec declared once, as typed models (pydantic v2), and its JSON Schema.

Every table of a spec is a model here: its fields, types, defaults, ranges and allowed
values. ``spec.loading`` validates each table of a spec with its model and words every
problem the way ``spec.messages`` says (``Says`` on a field: "expected <kind>, got <x>");
``spec_json_schema()`` is the JSON Schema editors and CI tools read (``ml4ml spec
schema``). Names a user may register (suites, transforms) are plain strings here: the
loader checks them against the registries, which the schema cannot know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from ml4ml.spec.recipe import ANOMALIES, AUGMENTATIONS, FIELD_ATTRS, OPTIMIZERS

__all__ = ["Says", "PipelineSpec", "StoreTable", "DataTable", "SuiteTable", "TransformTable",
           "ProbeTable", "ClusterTable", "AssessTable", "LabelsTable", "RecipeFields",
           "AddedEntry", "CheckpointsTable", "SampleTable", "GridTable", "ZooTable",
           "spec_json_schema", "ASSESSORS", "GUIDELINE_MAX", "BUILTIN_ARCHS", "SCHEMA_DRAFT"]

BUILTIN_ARCHS = ("cnn5", "vgg13bn", "resnet")
ASSESSORS = ("decision_tree", "random_forest", "adaboost", "linear", "logistic",
             "gradient_boosting")
GUIDELINE_MAX = 4000
# the draft it declares: its keywords mean the same in draft 7 and 2020-12, and draft 7 is
# what most editors' TOML and JSON language servers read
SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"
_MID_PATTERN = r"^[\w-]+$"
_MID = "letters, digits, '-' or '_'"


@dataclass(frozen=True)
class Says:
    """How a field's problems read (``spec.messages``).

    kind : what a value of the wrong type should have been: "expected <kind>, got <x!r>".
    value : for a value of the right type that breaks a constraint, "expected <value>, got
        <x!r>"; None: the kind's wording; "range": the constraint itself (">= 1").
    why : the whole message for any problem of the field (a str, or ``why(x)``).
    """

    kind: str = ""
    value: str | None = None
    why: str | Callable[[Any], str] | None = None


class _Table(BaseModel):
    """A table of the spec: strict TOML types, no unknown keys, finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _text(kind="a string"):
    return Says(kind)


class StoreTable(_Table):
    """``[store]``: where the results are written."""

    path: Annotated[str, Field(min_length=1, description=(
        "the store: a folder (relative to the spec) or a URL, e.g. memory://x.zarr")),
        Says(why="required: where the store is written, e.g. \"../stores/demo.zarr\" "
                 "(relative to this file) or \"memory://x.zarr\"")]
    precision: Annotated[Literal["float32", "float64"], Field(
        description="float type of the stored responses and matrices"),
        Says("'float32' or 'float64'", "'float32' or 'float64'")] = "float32"
    checkpoints: Annotated[str, Field(description=(
        "folder (or URL prefix) of the trained checkpoints; default: <store>.checkpoints")),
        Says("a folder path or URL (a string)")] = ""


class DataTable(_Table):
    """``[data]``: where the downloaded suites are."""

    root: Annotated[str, Field(description="folder of the suites' standard on-disk files"),
                    Says("a folder path (a string)")] = ""


class SuiteTable(_Table):
    """``[suites.<name>]``: a test suite to probe on: a built-in or registered one, or your
    own images (``kind = "imagefolder"`` with ``root``, or ``kind = "npz"`` with ``path``)."""

    split: Annotated[Literal["train", "test"], Says("'train' or 'test'", "'train' or 'test'")
                     ] = "test"
    kind: Annotated[Literal["imagefolder", "npz"], Field(description=(
        "your own images: 'imagefolder' (root: one folder per class) or 'npz' (path: "
        "arrays images and labels); absent: a built-in or registered suite")),
        Says("'imagefolder' or 'npz'", "'imagefolder' or 'npz'")] = None
    root: Annotated[str, Field(min_length=1, description=(
        "imagefolder: the folder holding one folder per class (relative to the spec)")),
        Says("a folder path (a string)", "a folder path (a string)")] = None
    path: Annotated[str, Field(min_length=1, description=(
        "npz: the .npz file with arrays images and labels (relative to the spec)")),
        Says("a file path (a string)", "a file path (a string)")] = None
    size: Annotated[list[Annotated[int, Field(ge=1)]], Field(
        min_length=2, max_length=2, description=(
            "[H, W]: every image is resized to it (bilinear, antialiased); default: the "
            "images' own size, the same for all")),
        Says("two positive integers [H, W]", "two positive integers [H, W]")] = None
    channels: Annotated[Literal[1, 3], Field(description=(
        "1 or 3; default: 3 for imagefolder, the array's own for npz")),
        Says("1 or 3", "1 or 3")] = None
    classes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(
        min_length=1, description=(
            "the class names in the model's output order; default: the sorted class folder "
            "names (imagefolder), the file's classes array or 0..max label (npz)")),
        Says("a list of class names", "a non-empty list of non-empty class names")] = None
    layout: Annotated[Literal["nhwc", "nchw"], Field(description=(
        "npz: the channel axis of a 4-D images array where it is ambiguous; default: "
        "detected")), Says("'nhwc' or 'nchw'", "'nhwc' or 'nchw'")] = None
    n_samples: Annotated[int, Field(ge=2, description="a seeded random subset of this size"),
                         Says("an integer >= 2", "an integer >= 2")] = None
    seed: Annotated[int, Says("an integer")] = 0


class TransformTable(_Table):
    """``[transforms.<name>]``: the probed grid, ``grid = [start, stop, num]`` or
    ``values = [...]`` (exactly one)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["grid"]},
                                                           {"required": ["values"]}]})
    grid: Annotated[list[float], Field(min_length=3, max_length=3, description=(
        "[start, stop, num]: num evenly spaced values (odd, identity at the centre; a "
        "corruption's severities: whole numbers from 0, e.g. [0, 5, 6])")),
        Says(why=lambda g: f"expected [start, stop, num], got {g!r}")] = None
    values: Annotated[list[float], Field(description=(
        "the grid's values: odd in number, ascending, identity at the centre; a "
        "corruption's severities: ascending whole numbers 0..5 starting at 0")),
        Says("a list of numbers", "a list of numbers")] = None
    interpolation: Annotated[Literal["nearest", "bilinear"], Field(description=(
        "how rotation, scaling and translation sample: nearest (default) or bilinear "
        "(torchvision's BILINEAR)")),
        Says("'nearest' or 'bilinear'", "'nearest' or 'bilinear'")] = "nearest"


class ProbeTable(_Table):
    """``[probe]``: how the responses are recorded."""

    layers: Annotated[list[str], Field(description=(
        "module names every model records; default: its last two convolutions")),
        Says("a list of module names", "a list of module names")] = []
    batch_size: Annotated[int, Field(ge=1), Says("a positive integer", "a positive integer")
                          ] = 256
    device: Annotated[str, Field(pattern=r"^(cpu|cuda.*)$"),
                      Says("'cpu' or 'cuda[:N]'", "'cpu' or 'cuda[:N]'")] = "cpu"
    fgsm_epsilon: Annotated[float, Field(ge=0), Says("a number >= 0", "a number >= 0")] = 0.0
    lie_derivative: Annotated[bool, Field(description=(
        "also record each sample's Lie derivative of the softmax at the identity (lee), "
        "by forward-mode autodiff through a bilinear warp")), Says("true or false")] = False
    units: Annotated[Literal["none", "channel"], Field(description=(
        "\"channel\": also record the spatial mean of every channel of the recorded layers "
        "(the probes' unit array, for per-channel response measures); default \"none\"")),
        Says("\"none\" or \"channel\"", "\"none\" or \"channel\"")] = "none"


class ClusterTable(_Table):
    """``[cluster]``: the local dask cluster (no option on the command line says else)."""

    workers: Annotated[Union[Annotated[int, Field(ge=1)], Literal["auto"]], Field(description=(
        "processes of a LocalCluster, or \"auto\": one per core (in process on one)")),
        Says("a positive integer or \"auto\"", "a positive integer or \"auto\"")] = None


def _assessors_why(value) -> str:
    if not isinstance(value, list) or not value:
        return f"expected a non-empty list, got {value!r}"
    bad = [a for a in value if a not in ASSESSORS]
    return f"unknown assessor(s) {bad}; known: {', '.join(ASSESSORS)}"


class AssessTable(_Table):
    """``[assess]``: what the assessors learn from and how they are compared."""

    transform: Annotated[str, Field(description="one of the spec's transforms; default: the "
                                                "first"),
                         Says("a transform name (a string)")] = ""
    label_source: Annotated[str, Field(min_length=1, description=(
        "'recipe', 'store' or a label file (relative to the spec)")),
        Says(why=lambda v: f"expected 'recipe', 'store' or a label file, got {v!r}")
    ] = "recipe"
    assessors: Annotated[list[Literal[ASSESSORS]], Field(min_length=1),
                         Says(why=_assessors_why)] = list(ASSESSORS)
    repeats: Annotated[int, Field(ge=1), Says("a positive integer", "a positive integer")] = 10
    features: Annotated[str, Field(description="feature set of the assessors"),
                        Says("a feature set name (a string)")] = "paper80"
    split: Annotated[str, Field(description="which probed samples the measures use"),
                     Says("a split name (a string)")] = "correct"
    suite: Annotated[str, Field(description="one of the spec's suites; default: the first"),
                     Says(why=lambda v: f"{v!r} is not one of the pipeline's suites")] = ""


def _guideline_why(text) -> str:
    if not isinstance(text, str):
        return f"expected a text (a TOML string), got {text!r}"
    if not text.strip():
        return ("is empty: leave it out for the default, or say what 'invariant' means for "
                "this database")
    return f"expected at most {GUIDELINE_MAX} characters, got {len(text)}"


class LabelsTable(_Table):
    """``[labels]``: what the labelling page tells its raters."""

    guideline: Annotated[str, Field(max_length=GUIDELINE_MAX, pattern=r"\S", description=(
        "what 'invariant' means for this database; default: the page's for the transform")),
        Says(why=_guideline_why)] = ""


# ----------------------------------------------------------------------------- the zoo
_NUMBERS = Says("a list of numbers (one per channel)", "a list of numbers (one per channel)")
_LAYERS = Says(why=lambda v: f"expected a non-empty list of module names (from "
                             f"model.named_modules()), got {v!r}")
_Layers = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1), _LAYERS]
_ARCH_PATTERN = (r"^(" + "|".join(BUILTIN_ARCHS) + r"|torchvision:.*|module:[^:]*:[^:]*)$")


def _doc(name: str) -> str:
    long_name, description = FIELD_ATTRS[name]
    return f"{long_name}: {description}"


class RecipeFields(_Table):
    """The fields of one model's training recipe (``spec.recipe.Recipe``), all optional:
    ``[zoo]`` and ``[zoo.defaults]`` give defaults, each model its own."""

    mid: Annotated[str, Field(pattern=_MID_PATTERN, description=_doc("mid")),
                   Says("a string", _MID)] = None
    arch: Annotated[str, Field(pattern=_ARCH_PATTERN, description=_doc("arch")),
                    Says("a string", f"one of {', '.join(BUILTIN_ARCHS)}, 'torchvision:<name>' "
                                     f"or 'module:<package.module>:<Class>'")] = None
    train_suite: Annotated[str, Field(description=_doc("train_suite")), Says("a string")] = None
    augmentation: Annotated[Literal[AUGMENTATIONS], Field(description=_doc("augmentation")),
                            Says("a string", f"one of {AUGMENTATIONS}")] = None
    aug_range: Annotated[float, Field(ge=0, description=_doc("aug_range")),
                         Says("a number", ">= 0 (degrees for rotation, a in 1 +- a < 1 for "
                                          "scaling/brightness)")] = None
    epochs: Annotated[int, Field(ge=1, description=_doc("epochs")),
                      Says("an integer", "range")] = None
    lr: Annotated[float, Field(gt=0, description=_doc("lr")), Says("a number", "range")] = None
    batch_size: Annotated[int, Field(ge=1, description=_doc("batch_size")),
                          Says("an integer", "range")] = None
    optimizer: Annotated[Literal[OPTIMIZERS], Field(description=_doc("optimizer")),
                         Says("a string", f"one of {OPTIMIZERS}")] = None
    pretrained: Annotated[str, Field(description=_doc("pretrained")), Says("a string")] = None
    fgsm_epsilon: Annotated[float, Field(ge=0, description=_doc("fgsm_epsilon")),
                            Says("a number", "range")] = None
    normalize_mean: Annotated[list[float], Field(description=_doc("normalize_mean")),
                              _NUMBERS] = None
    normalize_std: Annotated[list[float], Field(description=_doc("normalize_std")),
                             _NUMBERS] = None
    anomaly: Annotated[int, Field(ge=min(ANOMALIES), le=max(ANOMALIES),
                                  description=_doc("anomaly")),
                       Says("an integer", "a code 0..8 (" + ", ".join(
                           f"{k} {v}" for k, v in ANOMALIES.items()) + ")")] = None
    anomaly_fraction: Annotated[float, Field(description=_doc("anomaly_fraction")),
                                Says("a number")] = None
    anomaly_class: Annotated[int, Field(description=_doc("anomaly_class")),
                             Says("an integer")] = None
    anomaly_removed: Annotated[list[Annotated[list[float], Field(min_length=2, max_length=2)]],
                               Field(description=_doc("anomaly_removed")),
                               Says("a list of [low, high] intervals",
                                    "a list of [low, high] intervals")] = None
    seed: Annotated[int, Field(description=_doc("seed")), Says("an integer")] = None
    holdout: Annotated[bool, Field(description=_doc("holdout")), Says("true or false")] = None
    partition: Annotated[str, Field(description=_doc("partition")), Says("a string")] = None
    n_train: Annotated[int, Field(ge=0, description=_doc("n_train")),
                       Says("an integer", "range")] = None


RECIPE_FIELDS = tuple(RecipeFields.model_fields)


class TrainedModel(RecipeFields):
    """``[[zoo.models]]`` without ``checkpoint``: a model trained here, with its own layers."""

    layers: Annotated[_Layers, Field(description="module names this model records")] = None


class _AddedFields(_Table):
    arch: Annotated[str, Field(description="architecture of a state dict ('' for .pt2 and "
                                           "TorchScript)"), Says("a string")] = ""
    holdout: Annotated[bool, Says("true or false")] = None
    partition: Annotated[str, Says("a string")] = ""
    normalize_mean: Annotated[list[float], _NUMBERS] = []
    normalize_std: Annotated[list[float], _NUMBERS] = []
    layers: Annotated[_Layers, Field(description="module names this model records")] = None
    trust: Annotated[bool, Field(description="the file may be code (TorchScript, .pt2 with "
                                             "other operators): you vouch for it"),
                     Says("true or false")] = False


class AddedEntry(_AddedFields):
    """``[[zoo.models]]`` with ``checkpoint``: a model trained elsewhere."""

    checkpoint: Annotated[str, Field(min_length=1, description="its file (relative to the "
                                                               "spec) or URL"),
                          Says(why="expected a file path (relative to this spec), e.g. "
                                   "\"models/net.pt\"")]
    mid: Annotated[str, Field(pattern=_MID_PATTERN, description="model id; default: the "
                                                                "file's stem"),
                   Says("a string", _MID)] = None


class CheckpointsTable(_AddedFields):
    """``[zoo.checkpoints]``: every file a glob matches, each a model trained elsewhere."""

    glob: Annotated[str, Field(min_length=1, description="files (relative to the spec), e.g. "
                                                         "models/*.pt; ids: their stems"),
                    Says(why="expected a file path (relative to this spec), e.g. "
                             "\"models/*.pt\"")]


def _overlays(field_type):
    """A value of a recipe field, or a table of recipe fields set together."""
    return list[Union[field_type, RecipeFields]]


def _recipe_type(name):
    return RecipeFields.model_fields[name].annotation


GridTable = create_model(
    "GridTable", __base__=_Table,
    __doc__="``[[zoo.grids]]``: every combination of the listed values (a field's value, "
            "or a table of fields set together).",
    **{name: (Union[_recipe_type(name), _overlays(_recipe_type(name))], None)
       for name in RECIPE_FIELDS})

SampleChoices = create_model(
    "SampleChoices", __base__=_Table,
    __doc__="``[zoo.sample.choices]``: field = [values to draw from].",
    **{name: (Annotated[_overlays(_recipe_type(name)), Field(min_length=1)], None)
       for name in RECIPE_FIELDS})


class SampleTable(_Table):
    """``[zoo.sample]``: n_regular + n_holdout recipes drawn (seeded) from ``choices``."""

    n_regular: Annotated[int, Field(ge=0), Says("an integer >= 0", "an integer >= 0")] = 0
    n_holdout: Annotated[int, Field(ge=0), Says("an integer >= 0", "an integer >= 0")] = 0
    seed: Annotated[int, Says("an integer")] = 0
    choices: SampleChoices = None


class ZooTable(RecipeFields):
    """``[zoo]``: recipe fields given here are every model's defaults."""

    defaults: RecipeFields = None
    grids: list[GridTable] = []
    models: list[Union[TrainedModel, AddedEntry]] = []
    sample: SampleTable = None
    checkpoints: CheckpointsTable = None


class PipelineSpec(_Table):
    """A pipeline spec (TOML): the store, suites, transforms, zoo and how each stage runs."""

    name: Annotated[str, Field(description="default: the file's stem"), Says("a string")] = ""
    description: Annotated[str, Says("a string")] = ""
    store: StoreTable
    data: DataTable = None
    suites: Annotated[dict[str, SuiteTable], Field(min_length=1, description=(
        "test suites by name: built-in (digits, mnist5k, mnist, cifar10, ...) or registered"))]
    transforms: Annotated[dict[str, TransformTable], Field(min_length=1, description=(
        "probed transformation families by name: rotation, scaling, translation, "
        "brightness, contrast, blur, the 15 corruptions (gaussian_noise ... "
        "jpeg_compression, docs/transforms.md), or registered"))]
    zoo: ZooTable
    probe: ProbeTable = None
    cluster: ClusterTable = None
    assess: AssessTable = None
    labels: LabelsTable = None


TOP_KEYS = set(PipelineSpec.model_fields)


def spec_json_schema() -> dict:
    """The JSON Schema (draft 7) of a pipeline spec, as a dict: what ``ml4ml spec schema``
    prints and ``docs/spec.schema.json`` holds."""
    schema = _drop_null_defaults(PipelineSpec.model_json_schema())
    schema.pop("title", None)
    return {"$schema": SCHEMA_DRAFT, "title": "ml4ml pipeline spec", **schema}


def _drop_null_defaults(node):
    """The schema without ``"default": null`` (a field left out takes the loader's
    default, which may depend on other fields)."""
    if isinstance(node, dict):
        return {k: _drop_null_defaults(v) for k, v in node.items()
                if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_drop_null_defaults(v) for v in node]
    return node
