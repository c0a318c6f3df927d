"""Train stage: architectures, recipes, training, attacks, and ``train_pipeline`` over a store.

Modules: ``recipe`` (one model's recipe, plain data), ``architectures`` (``build_model``),
``training`` (``train_model``), ``training_data`` (training set, augmentation),
``recipe_checks`` (``validate_recipe``), ``checkpoint_files`` (ml4ml's own checkpoints:
save, verify, load), ``attacks`` (FGSM), ``layers`` (which layers each model records),
``table`` (the ``models`` table's columns and rows), ``stage`` (the whole zoo of a
pipeline into that table), ``adding`` (models trained elsewhere, registered as they are),
``checkpoints`` (their file formats, read as data unless trusted), ``convolutions``
(which submodules the probe can record), ``export_files`` (``.pt2`` programs read without
``torch.export.load``) and ``sources`` (``load(mid) -> (module, preprocessing)`` whatever
a model's source: all the probe sees of the zoo's models).
Exports load lazily (torch).
"""

from ml4ml._lazy import lazy_exports

__all__ = ["Recipe", "build_model", "train_model", "save_checkpoint", "load_checkpoint",
           "fgsm", "train_pipeline", "recipe_table", "recipe_from_row"]

__getattr__ = lazy_exports(__name__, {
    "Recipe": "ml4ml.zoo.recipe",
    "build_model": "ml4ml.zoo.architectures",
    "train_model": "ml4ml.zoo.training",
    "save_checkpoint": "ml4ml.zoo.checkpoint_files",
    "load_checkpoint": "ml4ml.zoo.checkpoint_files",
    "fgsm": "ml4ml.zoo.attacks",
    "train_pipeline": "ml4ml.zoo.stage",
    "recipe_table": "ml4ml.zoo.table",
    "recipe_from_row": "ml4ml.zoo.table",
})
