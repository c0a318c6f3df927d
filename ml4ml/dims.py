"""Names of dimensions, variables and coordinates, defined once and used by name everywhere.

Layouts (xarray datasets; ``...`` = any leading dims such as ``mid``):

probe dataset (one suite x one transform; what ``probe_model`` returns without ``mid``,
what ``store.open_probes`` returns with it)
    prediction   (mid, aug_param, sample)               int64   argmax class
    confidence   (mid, aug_param, sample)               float   largest softmax prob
    prob         (mid, aug_param, sample, class)        float   softmax (optional)
    act          (mid, aug_param, sample, layer, stat)  float   the 8 statistics
    layer_name   (mid, layer)                           str     recorded module names
    lee          (mid, sample)                          float64 Lie derivative (optional,
                 ``[probe] lie_derivative``): mean over classes of |d softmax / d param|
    unit         (mid, aug_param, sample, unit)         float32 channel spatial means
                 (only with ``[probe] units = "channel"``); coords unit_label (unit,),
                 unit_layer (unit,); unit_count (mid, layer) int64, -1 where none recorded
    done         (mid,)                                 bool    written last, per model
    coords: aug_param (float64, attrs units/transform), sample (int64),
            label (sample,) int64, stat (8 names, STATS order), class (int64)

matrices dataset
    matrix        (mid, level, split, kind, aug_param_i, aug_param_j)  float64
    matrix_subset (mid, level, split, aug_param_i, aug_param_j)        float64  L2 matrix
                  of the seeded 90% sample subset (for ``sstv``)
    coords: level ("confidence", "layer-2_mean", ..., "layer-1_max_std": dims.level_names),
            level_module (level,) str: the same by module name ("conv3_max") where every
            measured model recorded that module there, "" elsewhere; split, kind, aug_param_i/j

measures dataset
    value            (mid, level, split, interval, measure)  float64
    accuracy         (mid, aug_param)                        float64
    class_accuracy   (mid, aug_param, class)                 float64
    robust_accuracy  (mid, interval)                         float64
    coords: interval (0..K-1), half_width (interval,) in grid steps, measure (names)
"""

import re

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
# the Lie derivative of the softmax output per sample (``[probe] lie_derivative``)
LEE = "lee"

# the eight layer statistics of docs/measures.md, in the reference's column order
STATS = ("mean", "std", "max", "min", "mean_max", "mean_std", "max_mean", "max_std")
# sample splits, decided at the centre (identity) parameter
SPLITS = ("all", "correct", "incorrect")
# variance-matrix kinds; every paper measure uses "l2"
KINDS = ("l2", "cosine", "corrcoef")
# level label of the confidence response; a layer's levels are f"{layer}_{stat}", where
# layer is the recorded layer's position from the output (``layer_label``): the last
# recorded layer is "layer-1", the one before it "layer-2", ... (docs/measures.md, "Levels")
CONFIDENCE_LEVEL = "confidence"
# non-index coordinate along ``level``: the level by module name ("conv3_max") where every
# measured model of the group recorded a module of that name at that position, "" elsewhere
LEVEL_MODULE = "level_module"
DEFAULT_N_LAYERS = 2
_LAYER_LABEL = re.compile(r"^layer-([1-9][0-9]*)$")
# per-channel units (``[probe] units = "channel"``; docs/measures.md, "Units"): the probes'
# ``unit`` array (mid, aug_param, sample, unit) holds every recorded channel's spatial mean;
# its ``unit`` dim is positional, each unit named by ``unit_label`` ("layer-2/0": its layer
# label and channel index) and ``unit_layer`` (the module name every model recorded at that
# layer, else the layer label); ``unit_count`` (mid, layer) is how many channels a model
# recorded per layer (-1: none). Their mean per layer is the level ``channel_level(prefix)``.
UNIT_RESPONSE = UNIT  # the array of channel means is named like its positional dim
UNIT_LABEL = "unit_label"
UNIT_LAYER = "unit_layer"
UNIT_COUNT = "unit_count"
UNIT_VALUE = "unit_value"
# tmeasures' per-feature-map transformational and sample variance of each unit (mid, unit)
UNIT_TV = "unit_tv"
UNIT_SV = "unit_sv"
CHANNELS = "channels"
# attrs of the ``unit`` array (its name is the dim's, whose DESCRIPTIONS entry it is not)
UNIT_RESPONSE_ATTRS = {"long_name": "channel mean", "description": (
    "spatial mean of each recorded channel's output (raw module output) per grid value and "
    "sample; units named by unit_label and unit_layer, NaN where a model has no such "
    "channel")}


def layer_label(index: int, n_layers: int) -> str:
    """The name recorded layer ``index`` (0 .. n_layers-1, input to output) goes by in
    levels, feature columns, the report and the labelling page: its position from the
    output, ``layer_label(1, 2) == "layer-1"`` (the last), ``layer_label(0, 2) == "layer-2"``."""
    if not 0 <= int(index) < int(n_layers):
        raise ValueError(f"layer index {index} outside 0..{n_layers - 1}")
    return f"layer-{int(n_layers) - int(index)}"


def layer_labels(n_layers: int) -> list[str]:
    """Every recorded layer's label, input to output: ``["layer-2", "layer-1"]`` for two."""
    return [layer_label(index, n_layers) for index in range(int(n_layers))]


def layer_level(prefix: str, stat: str) -> str:
    """Level label of one layer statistic, e.g. ``layer_level("layer-1", "max") ==
    "layer-1_max"``."""
    return f"{prefix}_{stat}"


def level_names(n_layers: int) -> list[str]:
    """Every level of a matrices / measures group with ``n_layers`` recorded layers: the
    confidence, then each layer's statistics in ``STATS`` order, input to output, e.g.
    ``["confidence", "layer-2_mean", ..., "layer-1_max_std"]``. The same for every model
    and every store of that many layers: adding a model never renames a level."""
    return [CONFIDENCE_LEVEL] + [layer_level(p, stat) for p in layer_labels(n_layers)
                                 for stat in STATS]


def channel_level(prefix: str) -> str:
    """Level label of the mean over a layer's channels of their response measures,
    e.g. ``channel_level("layer-1") == "layer-1_channels"``."""
    return layer_level(prefix, CHANNELS)


def is_channel_level(level) -> bool:
    """Whether ``level`` is a ``channel_level`` label."""
    prefix, _, rest = str(level).rpartition("_")
    return rest == CHANNELS and is_layer_label(prefix)


def usual_levels(levels) -> list[str]:
    """``levels`` without the ``channel_level`` labels appended after the usual ones."""
    return [str(level) for level in levels if not is_channel_level(level)]


def prefixes_of_levels(levels) -> list[str]:
    """The layer labels of a ``level`` coordinate made by ``level_names``, input to output
    (``channel_level`` labels appended after them are left out)."""
    levels = [level for level in usual_levels(levels) if level != CONFIDENCE_LEVEL]
    first = f"_{STATS[0]}"
    return [level[:-len(first)] for level in levels[::len(STATS)]]


def is_layer_label(prefix: str) -> bool:
    return bool(_LAYER_LABEL.match(str(prefix)))


def n_layers_of_levels(levels) -> int | None:
    """The number of recorded layers of a ``level`` coordinate in this version's naming
    (``level_names``), or None for any other (e.g. a store of an earlier version whose
    levels took module names, ``conv2_mean``, or ``layer0_mean``)."""
    levels = [str(level) for level in levels]
    usual = usual_levels(levels)
    n_layers, rest = divmod(len(usual) - 1, len(STATS))
    if rest or n_layers < 0 or usual != level_names(n_layers):
        return None
    channels = levels[len(usual):]  # channel levels only after the usual ones, each once
    labels = layer_labels(n_layers)
    if levels[:len(usual)] != usual or len(set(channels)) != len(channels) or \
            any(level.rpartition("_")[0] not in labels for level in channels):
        return None
    return n_layers


def unit_labels(channels) -> list[str]:
    """``unit_label`` of every channel of layers of ``channels`` (channel counts, input to
    output): ``unit_labels([2, 1]) == ["layer-2/0", "layer-2/1", "layer-1/0"]``."""
    n_layers = len(channels)
    return [f"{layer_label(index, n_layers)}/{c}" for index, count in enumerate(channels)
            for c in range(int(count))]


def prefix_of_unit(label) -> str:
    """The layer label of a ``unit_label``: ``prefix_of_unit("layer-2/5") == "layer-2"``."""
    return str(label).split("/", 1)[0]


def unit_layers_of(layer_names, labels) -> list[str]:
    """The ``unit_layer`` coordinate of units ``labels`` (``unit_label`` values): the module
    name every model that holds units recorded at the unit's layer (``shared_modules`` of
    ``named_rows(layer_names)``, (model, layer)), else the unit's layer label."""
    import numpy as np

    names = np.asarray(layer_names, dtype=object)
    named = named_rows(names)
    n_layers = names.shape[-1] if names.ndim else 0
    modules = shared_modules(named) if len(named) else [""] * n_layers
    by_prefix = {layer_label(k, n_layers): m for k, m in enumerate(modules)}
    return [by_prefix.get(prefix_of_unit(label)) or prefix_of_unit(label) for label in labels]


def shared_modules(layer_names) -> list[str]:
    """Per recorded layer (input to output), the module name every model recorded there,
    "" where they differ (or none is named): ``layer_names`` (layer,) or (model, layer)."""
    import numpy as np

    values = np.asarray(layer_names, dtype=object)
    values = values.reshape(-1, values.shape[-1]) if values.ndim else values.reshape(1, 1)
    out = []
    for index in range(values.shape[-1]):
        names = {str(name or "") for name in values[:, index]}
        out.append(names.pop() if len(names) == 1 else "")
    return out


def named_rows(layer_names):
    """The rows of ``layer_names`` (model, layer) that hold module names: the models a
    matrices or measures group holds measures of (a row laid out but never written holds
    ""). ``level_module`` is made from them, whether their ``done`` flag is set or was
    cleared since (a redo pending), so clearing flags never makes it out of date."""
    import numpy as np

    values = np.asarray(layer_names, dtype=object)
    if values.ndim < 2 or not values.size:
        return values.reshape(0, values.shape[-1] if values.ndim else 0)
    written = np.array([any(str(v or "") for v in row) for row in values], dtype=bool)
    return values[written]


def level_modules(modules) -> list[str]:
    """The ``level_module`` coordinate of ``shared_modules`` (one name or "" per layer):
    ``["confidence", "conv2_mean", ..., "conv3_max_std"]``, "" where the models differ."""
    return [CONFIDENCE_LEVEL] + [layer_level(m, stat) if m else "" for m in modules
                                 for stat in STATS]


def level_modules_of(layer_names, n_layers: int, levels=None) -> list[str]:
    """The ``level_module`` coordinate a matrices or measures group holds: from the module
    names of its rows that hold some (``named_rows``; ``layer_names`` (model, layer)).
    levels : the group's ``level`` labels, if it has ``channel_level`` ones after the usual
    levels: theirs follow (``conv3_channels``, "" where the models differ)."""
    named = named_rows(layer_names)
    modules = shared_modules(named) if len(named) else [""] * int(n_layers)
    by_prefix = dict(zip(layer_labels(len(modules)), modules))
    channels = [level for level in (levels or []) if is_channel_level(level)]
    return level_modules(modules) + [
        channel_level(by_prefix[prefix]) if by_prefix.get(prefix) else ""
        for prefix in (str(level).rpartition("_")[0] for level in channels)]


def modules_of_levels(levels, level_modules) -> dict:
    """{layer label: module name} of the layers every model recorded alike, from a group's
    ``level`` and ``level_module`` coordinates: ``{"layer-2": "conv2", "layer-1": "conv3"}``."""
    if level_modules is None:
        return {}
    out = {}
    first = f"_{STATS[0]}"
    for level, module in zip([str(v) for v in levels], [str(v) for v in level_modules]):
        prefix = level[:-len(first)]
        if level.endswith(first) and is_layer_label(prefix) and module.endswith(first):
            out[prefix] = module[:-len(first)]
    return out


def module_note(name: str, modules: dict) -> str:
    """``name`` (a level or feature column such as "layer-1_max_sstv") with the module
    recorded at its layer beside it where ``modules`` ({"layer-1": "conv3", ...}) knows
    it: "layer-1_max_sstv (conv3)"; else ``name`` as it is."""
    prefix = str(name).split("_", 1)[0]
    module = (modules or {}).get(prefix, "")
    return f"{name} ({module})" if module and is_layer_label(prefix) else str(name)


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
            "<layer>_<stat>, layer-1 being the last recorded layer, layer-2 the one before "
            f"it, ... (e.g. layer-1_max; {DOCS})"),
    LEVEL_MODULE: ("response by module name", "the level by the recorded module's name "
                   "(e.g. conv3_max) where every model of the group recorded that module "
                   "there; empty where they differ"),
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
    UNIT_LABEL: ("unit label", "the unit's recorded layer, by position from the output, and "
                 "its channel: layer-2/5 is channel 5 of the layer before the last"),
    UNIT_LAYER: ("unit's module", "name of the module every model recorded at the unit's "
                 "layer; the layer label (layer-2) where the models differ"),
    UNIT_COUNT: ("recorded units", "number of channels the model recorded in unit per layer (its "
                 "positions follow unit_label); -1 where it recorded none"),
    UNIT_TV: ("feature-map transformational variance", "tmeasures' tv of the channel's "
              "feature map (AverageFeatureMaps): the mean over samples and positions of the "
              f"unbiased std over the grid ({DOCS}, 'Units')"),
    UNIT_SV: ("feature-map sample variance", "tmeasures' sv of the channel's feature map "
              "(AverageFeatureMaps): the mean over grid values and positions of the unbiased "
              f"std over the samples ({DOCS}, 'Units')"),
    UNIT_VALUE: ("response measure per unit", f"response measures of every recorded channel "
                 f"({DOCS}, 'Units')"),
    PROB: ("softmax probability", "the model's softmax output for each class"),
    PREDICTION: ("predicted class", "argmax of the model's output; -1 where not probed"),
    CONFIDENCE: ("confidence", "largest softmax probability"),
    ACT: ("layer statistics", f"the eight statistics of each recorded layer's output "
          f"(raw conv output) per sample ({DOCS})"),
    LEE: ("Lie derivative of the softmax", "per sample, the mean over classes of |d softmax "
          "/ d parameter| at the identity along the transform's generator, by forward-mode "
          f"autodiff through a bilinear warp, in probability per parameter unit ({DOCS}, "
          "'lee'); NaN where the model was probed without it"),
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
