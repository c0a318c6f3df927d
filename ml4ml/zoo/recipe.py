"""One model's training recipe (plain data): defined in ``ml4ml.spec.recipe``, below the
stages, so that the spec layer needs nothing from the zoo; re-exported here."""

from ml4ml.spec.recipe import (ANOMALIES, AUGMENTATIONS, FIELD_ATTRS, OPTIMIZERS, RANGE_UNITS,
                               Recipe, recipe_range, recipe_text)

__all__ = ["ANOMALIES", "AUGMENTATIONS", "OPTIMIZERS", "Recipe", "FIELD_ATTRS", "RANGE_UNITS",
           "recipe_range", "recipe_text"]
