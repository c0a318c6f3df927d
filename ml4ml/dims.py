"""Names of dimensions, variables and coordinates, defined once and used by name everywhere.

Layouts (xarray datasets; ``...`` = any leading dims such as ``mid``):

probe dataset (one suite x one transform; what ``probe_model`` returns without ``mid``,
what ``store.open_probes`` returns with it)
    prediction   (mid, aug_param, sample)               int64   argmax class
    confidence   (mid, aug_param, sample)               float   largest softmax prob
    prob         (mid, aug_param, sample, class)        float   softmax (optional)
    act          (mid, aug_param, sample, layer, stat)  float   the 8 statistics
    layer_name   (mid, layer)                           str     recorded module names
    done         (mid,)                                 bool    written last, per model
    coords: aug_param (float64, attrs units/transform), sample (int64),
            label (sample,) int64, stat (8 names, STATS order), class (int64)

matrices dataset
    matrix        (mid, level, split, kind, aug_param_i, aug_param_j)  float64
    matrix_subset (mid, level, split, aug_param_i, aug_param_j)        float64  L2 matrix
                  of the seeded 90% sample subset (for ``sstv``)
    coords: level ("confidence", "conv2_mean", ...: dims.level_names), split, kind, aug_param_i/j

measures dataset
    value            (mid, level, split, interval, measure)  float64
    accuracy         (mid, aug_param)                        float64
    class_accuracy   (mid, aug_param, class)                 float64
    robust_accuracy  (mid, interval)                         float64
    coords: interval (0..K-1), half_width (interval,) in grid steps, measure (names)
"""

# dimensions
MID = "mid"
AUG_PARAM = "aug_param"
AUG_PARAM_I = "aug_param_i"
AUG_PARAM_J = "aug_param_j"
SAMPLE = "sample"
CLASS = "class"
LAYER = "layer"
STAT = "stat"
LEVEL = "level"
SPLIT = "split"
KIND = "kind"
INTERVAL = "interval"
MEASURE = "measure"
# response measures (docs/measures.md, "Response measures"): the units a response has
# (softmax classes, layer statistics or channels) and the measures of them
UNIT = "unit"
RESPONSE_MEASURE = "response_measure"
# the assess group's methods (assessors and baselines); not "method", a keyword of
# xarray's .sel / .interp
ESTIMATOR = "estimator"
ESTIMATOR_KIND = "method_kind"

# variables and coordinates
PREDICTION = "prediction"
CONFIDENCE = "confidence"
PROB = "prob"
ACT = "act"
LAYER_NAME = "layer_name"
LABEL = "label"
DONE = "done"
MATRIX = "matrix"
MATRIX_SUBSET = "matrix_subset"
VALUE = "value"
HALF_WIDTH = "half_width"
RESPONSE_VALUE = "response_value"

# the eight layer statistics of docs/measures.md, in the reference's column order
STATS = ("mean", "std", "max", "min", "mean_max", "mean_std", "max_mean", "max_std")
# sample splits, decided at the centre (identity) parameter
SPLITS = ("all", "correct", "incorrect")
# variance-matrix kinds; every paper measure uses "l2"
KINDS = ("l2", "cosine", "corrcoef")
# level label of the confidence response; a layer's levels are f"{layer}_{stat}", where
# layer is the recorded module's name (``layer_prefix``), e.g. "conv3_max"
CONFIDENCE_LEVEL = "confidence"


def layer_prefix(name, index: int) -> str:
    """The name a recorded layer goes by in levels, feature columns, the report and the
    labelling page: its module name with "." replaced by "_" ("conv3", "features_10");
    ``layer<index>`` for a layer without a name (or whose models disagree on it)."""
    name = str(name or "").replace(".", "_")
    return name or f"layer{index}"


def layer_level(prefix: str, stat: str) -> str:
    """Level label of one layer statistic, e.g. ``layer_level("conv3", "max") == "conv3_max"``."""
    return f"{prefix}_{stat}"


def layer_prefixes(layer_names) -> list[str]:
    """One prefix per recorded layer from ``layer_name`` values (layer,) or (model, layer):
    the models' common module name at each position, ``layer<i>`` where they differ."""
    import numpy as np

    values = np.asarray(layer_names, dtype=object)
    values = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
    out = []
    for index in range(values.shape[-1]):
        names = {layer_prefix(name, index) for name in values[:, index]}
        out.append(names.pop() if len(names) == 1 else f"layer{index}")
    if len(set(out)) != len(out):  # two positions of one name: positions tell them apart
        out = [f"layer{index}" for index in range(len(out))]
    return out


def level_names(prefixes) -> list[str]:
    """Every level of a matrices / measures group: the confidence, then each layer's
    statistics in ``STATS`` order, e.g. ``["confidence", "conv2_mean", ..., "conv3_max_std"]``."""
    return [CONFIDENCE_LEVEL] + [layer_level(p, stat) for p in prefixes for stat in STATS]


def prefixes_of_levels(levels) -> list[str]:
    """The layer prefixes of a ``level`` coordinate made by ``level_names``."""
    levels = [str(level) for level in levels if str(level) != CONFIDENCE_LEVEL]
    first = f"_{STATS[0]}"
    return [level[:-len(first)] for level in levels[::len(STATS)]]


# CF-style attributes of every variable and coordinate the stages write: name ->
# (long_name, description). ``describe`` attaches them to a dataset.
DOCS = "docs/measures.md"
DESCRIPTIONS = {
    MID: ("model id", "id of the model in the models table; hold-out ids start with 't'"),
    AUG_PARAM: ("transformation parameter", "value of the transformation family's parameter; "
                "the centre value is the identity"),
    AUG_PARAM_I: ("transformation parameter (rows)", "parameter of the matrix row"),
    AUG_PARAM_J: ("transformation parameter (columns)", "parameter of the matrix column"),
    SAMPLE: ("test sample", "index of the test image in its suite"),
    LABEL: ("true class", "true class of each test sample"),
    CLASS: ("class", "class index of the model's outputs"),
    LAYER: ("recorded layer", "position of the recorded layer; its module name is layer_name"),
    STAT: ("layer statistic", f"the eight per-sample statistics of a layer output ({DOCS})"),
    LEVEL: ("response", "the model response a matrix is built from: the confidence, or "
            "<layer>_<stat> (the recorded module's name, e.g. conv3_max)"),
    SPLIT: ("sample split", "all samples, or those the model classifies correctly / "
            "incorrectly at the identity"),
    KIND: ("matrix kind", "l2 (every paper measure), cosine, corrcoef"),
    INTERVAL: ("nested interval", "interval k keeps parameters k .. P-1-k"),
    HALF_WIDTH: ("interval half-width", "grid steps each side of the identity kept by the "
                 "interval"),
    MEASURE: ("measure", f"name of a measure of the variance matrix ({DOCS})"),
    UNIT: ("unit", "one component of a response: a softmax class, a layer statistic or a "
           "channel"),
    RESPONSE_MEASURE: ("response measure", f"name of a measure of the responses themselves "
                       f"(tv, sv, nv, anova, goodfellow, geed_*, consistency, lee_fd; {DOCS})"),
    RESPONSE_VALUE: ("response measure value", f"response measures per level, averaged over "
                     f"units where they are per unit ({DOCS}, 'Response measures')"),
    PROB: ("softmax probability", "the model's softmax output for each class"),
    PREDICTION: ("predicted class", "argmax of the model's output; -1 where not probed"),
    CONFIDENCE: ("confidence", "largest softmax probability"),
    ACT: ("layer statistics", f"the eight statistics of each recorded layer's output "
          f"(raw conv output) per sample ({DOCS})"),
    LAYER_NAME: ("layer module name", "name of the recorded module in model.named_modules()"),
    DONE: ("complete", "true once every value of the model's row is written"),
    MATRIX: ("variance matrix", f"l2: ||R_i - R_j|| / sqrt(n_split), not row-reversed; "
             f"cosine: 1 - cos(R_i, R_j); corrcoef: Pearson r of rows i and j ({DOCS})"),
    MATRIX_SUBSET: ("variance matrix of the 90% subset", "l2 matrix of the seeded 90% "
                    f"sample subset (RandomState(2)), split by its own predictions; for "
                    f"sstv ({DOCS})"),
    VALUE: ("measure value", f"measures of the l2 variance matrices per nested interval "
            f"({DOCS})"),
    "accuracy": ("accuracy", "fraction of samples classified correctly at each parameter"),
    "class_accuracy": ("accuracy per class", "fraction of each class's samples classified "
                       "correctly at each parameter; NaN for a class with no samples"),
    "robust_accuracy": ("robust accuracy", "fraction of samples correct at every parameter "
                        "of the nested interval"),
}


# units of the variables whose units are not the transformation's (``aug_param`` and the
# matrices' axes carry those); on each variable, never on a group
UNITS = {HALF_WIDTH: "grid steps"}


def describe(ds):
    """A copy of ``ds`` with ``long_name`` and ``description`` (and ``units`` where
    ``UNITS`` has them) on every variable it knows."""
    ds = ds.copy(deep=False)
    for name, var in ds.variables.items():
        if name in UNITS:
            var.attrs.setdefault("units", UNITS[name])
        if name in DESCRIPTIONS:
            long_name, description = DESCRIPTIONS[name]
            var.attrs.setdefault("long_name", long_name)
            var.attrs.setdefault("description", description)
    return ds
