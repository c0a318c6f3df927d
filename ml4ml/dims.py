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
    coords: level ("confidence", "layer0_mean", ...), split, kind, aug_param_i/j

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

# the eight layer statistics of MEASURES.md, in the reference's column order
STATS = ("mean", "std", "max", "min", "mean_max", "mean_std", "max_mean", "max_std")
# sample splits, decided at the centre (identity) parameter
SPLITS = ("all", "correct", "incorrect")
# variance-matrix kinds; every paper measure uses "l2"
KINDS = ("l2", "cosine", "corrcoef")
# level label of the confidence response; layer levels are f"layer{i}_{stat}"
CONFIDENCE_LEVEL = "confidence"


def layer_level(layer_index: int, stat: str) -> str:
    """Level label of one layer statistic, e.g. ``layer_level(1, "max") == "layer1_max"``."""
    return f"layer{layer_index}_{stat}"
