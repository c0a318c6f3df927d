"""One model's training recipe, and a model trained elsewhere: plain data.

A recipe (every field the ``models`` table records) and an ``AddedModel`` are frozen
dataclasses; ``config`` builds them from a pipeline spec and validates them, ``zoo.training``
turns a recipe into a trained model and ``zoo.adding`` registers an added model. They live
below the stages (re-exported by ``zoo.recipe`` and ``zoo.adding``) so that the spec layer
imports nothing from them. The anomaly codes
are the paper's:

====  ==========================  ===================================================
code  anomaly                     parameters used
====  ==========================  ===================================================
0     none
1     ordered batches             (the same batch order every epoch, no shuffling)
2     noise images                ``anomaly_fraction``: share of training images
                                  replaced by uniform noise
3     class imbalance             ``anomaly_class``, ``anomaly_fraction`` = kept ratio
4     class-ordered training      (training set sorted by class, no shuffling)
5     training subset             ``anomaly_fraction`` = kept ratio
6     impaired augmentation       ``anomaly_removed``: ``[[lo, hi], ...]`` parameter
                                  intervals removed from the augmentation range
7     wrong labels                ``anomaly_fraction``: share of labels replaced by a
                                  different random class
8     test-data leakage           ``anomaly_fraction``: share of the test suite added
                                  to the training set
====  ==========================  ===================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

ANOMALIES = {
    0: "none",
    1: "ordered_batches",
    2: "noise_images",
    3: "class_imbalance",
    4: "class_ordered",
    5: "training_subset",
    6: "impaired_augmentation",
    7: "wrong_labels",
    8: "test_leakage",
}
AUGMENTATIONS = ("none", "rotation", "scaling", "brightness")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class Recipe:
    """How one model of the zoo is trained.

    mid : model id; hold-out ids start with ``t``.
    arch : ``cnn5``, ``vgg13bn``, ``resnet``, ``torchvision:<name>`` or
        ``module:<package.module>:<Class>`` (a user's ``nn.Module``; its ``__init__``
        takes ``num_classes`` and ``in_channels`` keywords).
    train_suite : suite name for ``suites.load_suite(..., split="train")``.
    augmentation : family applied at random during training (``none``, ``rotation``,
        ``scaling``, ``brightness``); ``aug_range`` is +- degrees for rotation and
        ``a`` in ``1 +- a`` for scaling and brightness.
    pretrained : "" for none, else a local weights file (ImageNet weights for vgg13bn).
    normalize_mean, normalize_std : per-channel input normalisation applied after
        augmentation; empty tuples for none.
    fgsm_epsilon : FGSM adversarial training when > 0 (each batch replaced by its
        FGSM perturbation).
    """

    mid: str
    arch: str = "cnn5"
    train_suite: str = "digits"
    augmentation: str = "none"
    aug_range: float = 0.0
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"
    pretrained: str = ""
    fgsm_epsilon: float = 0.0
    normalize_mean: tuple = ()
    normalize_std: tuple = ()
    anomaly: int = 0
    anomaly_fraction: float = 0.0
    anomaly_class: int = -1
    anomaly_removed: tuple = ()
    seed: int = 0
    holdout: bool = False
    partition: str = ""
    n_train: int = 0  # 0: the whole training split; else a seeded subset of this size

    @property
    def anomaly_name(self) -> str:
        return ANOMALIES[self.anomaly]

    @property
    def normalize(self):
        """``(mean, std)`` or None, as ``probe_model`` takes it."""
        if not self.normalize_mean:
            return None
        return (tuple(self.normalize_mean), tuple(self.normalize_std))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class AddedModel:
    """A model trained elsewhere: its id, checkpoint file and how to feed it.

    checkpoint : a local path or fsspec URL (state dict, ``.pt2`` or TorchScript).
    arch : the architecture of a state dict ("" for export and TorchScript).
    normalize_mean, normalize_std : per-channel input normalisation applied after the
        transformation (empty: none).
    base : the folder ``module:`` architectures are imported relative to (the spec's
        folder, or the current folder for ``add-models``).
    layers : module names the probe records for it (``zoo.layers``); () for the default.
    where : the spec field it came from ("" for the command line), for messages.
    trusted : the user vouches for the file, which may then be code (TorchScript, a
        ``.pt2`` calling operators outside the allow-list).
    """

    mid: str
    checkpoint: str
    arch: str = ""
    holdout: bool = False
    partition: str = ""
    normalize_mean: tuple = ()
    normalize_std: tuple = ()
    base: str = ""
    layers: tuple = ()
    where: str = ""
    trusted: bool = False

    @property
    def normalize(self):
        if not self.normalize_mean:
            return None
        return (tuple(self.normalize_mean), tuple(self.normalize_std))


# CF-style (long_name, description) of every recipe field, as the models table stores them
FIELD_ATTRS = {
    "mid": ("model id", "hold-out ids start with 't'"),
    "arch": ("architecture", "cnn5, vgg13bn, resnet, torchvision:<name> or "
             "module:<package.module>:<Class>"),
    "train_suite": ("training suite", "the suite whose train split trains the model"),
    "augmentation": ("training augmentation", "none, rotation, scaling or brightness"),
    "aug_range": ("augmentation range", "+- degrees for rotation, a in 1 +- a for scaling and "
                  "brightness"),
    "epochs": ("epochs", "passes over the training set"),
    "lr": ("learning rate", "the optimiser's learning rate"),
    "batch_size": ("batch size", "training images per optimiser step"),
    "optimizer": ("optimiser", "adam or sgd (momentum 0.9)"),
    "pretrained": ("pretrained weights", "local weights file the model starts from; empty "
                   "for none"),
    "fgsm_epsilon": ("adversarial epsilon", "FGSM adversarial training when > 0"),
    "normalize_mean": ("normalisation mean", "per-channel input mean, a JSON list"),
    "normalize_std": ("normalisation std", "per-channel input std, a JSON list"),
    "anomaly": ("anomaly code", "the paper's training anomaly: 0 none, 1 ordered batches, 2 "
                "noise images, 3 class imbalance, 4 class-ordered, 5 training subset, 6 "
                "impaired augmentation, 7 wrong labels, 8 test leakage"),
    "anomaly_name": ("anomaly", "name of the anomaly code"),
    "anomaly_fraction": ("anomaly fraction", "share of images or labels the anomaly affects "
                         "(kept ratio for 3 and 5)"),
    "anomaly_class": ("anomaly class", "the class anomaly 3 thins out"),
    "anomaly_removed": ("removed augmentation intervals", "JSON list of [low, high] intervals "
                        "anomaly 6 removes from the augmentation range"),
    "seed": ("seed", "every random draw of the training run"),
    "holdout": ("hold-out", "a hold-out model (always its own fold when assessing)"),
    "partition": ("partition", "the paper's partition the model belongs to"),
    "n_train": ("training subset size", "0: the whole training split"),
}

# the units of a training augmentation's range (``aug_range``)
RANGE_UNITS = {"rotation": "± {r:g} degrees", "scaling": "factor 1 ± {r:g}",
               "brightness": "factor 1 ± {r:g}"}


def recipe_range(augmentation: str, span: float) -> str:
    """A training augmentation's range with its unit: "± 30 degrees" for rotation,
    "factor 1 ± 0.2" for scaling and brightness, "none" without augmentation."""
    if augmentation == "none":
        return "none"
    return RANGE_UNITS.get(augmentation, "± {r:g}").format(r=span)


def recipe_text(augmentation: str, span: float, anomaly: int, arch: str = "") -> str:
    """A trained model's recipe in a few words: "rotation ± 20 degrees, anomaly 4
    (class_ordered)", "no augmentation, no anomaly" (also for a range of 0); ``arch``
    first when given."""
    trained = "no augmentation" if augmentation in ("none", "") or not span else \
        f"{augmentation} {recipe_range(augmentation, span)}"
    anomaly = int(anomaly)
    flaw = f"anomaly {anomaly} ({ANOMALIES.get(anomaly, '?')})" if anomaly else "no anomaly"
    return ", ".join(part for part in (arch, trained, flaw) if part)
