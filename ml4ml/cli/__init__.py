"""The ``ml4ml`` command: parses arguments and calls the library, nothing else."""

from __future__ import annotations

import click

from ml4ml import __version__
from ml4ml.cli.assess import assess, label
from ml4ml.cli.common import CONTEXT
from ml4ml.cli.labelling import label_ui
from ml4ml.cli.measures import measures_group
from ml4ml.cli.models import add_models, remove_models
from ml4ml.cli.report import plot, report
from ml4ml.cli.run import run
from ml4ml.cli.spec import spec_group
from ml4ml.cli.stages import features, import_legacy, measure, probe, train, validate
from ml4ml.cli.store import store_group

__all__ = ["cli", "main"]


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="ml4ml")
def cli():
    """Invariance testing of whole model databases (ML4ML, arXiv 2109.12926).

    \b
    A pipeline spec (TOML) describes a model zoo, test suites and transformation grids;
    every stage reads and writes ONE Zarr store:
      ml4ml validate pipelines/demo-digits.toml   check a spec
      ml4ml spec schema                           the spec's JSON Schema (editors, CI)
      ml4ml train    pipelines/demo-digits.toml   train the zoo's models
      ml4ml probe    pipelines/demo-digits.toml   responses over the grids -> store
      ml4ml measure  stores/demo-digits.zarr      variance matrices + measures
      ml4ml features stores/demo-digits.zarr --transform rotation -o features.csv
      ml4ml label    stores/demo-digits.zarr --transform rotation --from recipe
      ml4ml label-ui stores/demo-digits.zarr --transform rotation --rater ann --rater bob
                     one private URL per rater: label models in the browser
      ml4ml assess   stores/demo-digits.zarr --transform rotation   assessors vs baselines
      ml4ml measures rank stores/demo-digits.zarr --transform rotation
                     which single measure agrees best with the labels
      ml4ml report   stores/demo-digits.zarr -o stores/demo-digits.report   index.html
      ml4ml run      pipelines/demo-digits.toml   all of the above
      ml4ml store check stores/demo-digits.zarr   find (and 'store repair': mend) damage

    \b
    Test models you already trained (state dict, torch.export .pt2, TorchScript): list
    them in the spec ([[zoo.models]] checkpoint = "net.pt", or [zoo.checkpoints] glob =
    "models/*.pt2"), or add them to a store without training:
      ml4ml add-models stores/demo-digits.zarr models/*.pt2   (docs/own-models.md)
      ml4ml remove-models stores/demo-digits.zarr MID...   take models out again
    """


for command in (validate, train, add_models, remove_models, probe, measure, features,
                import_legacy, label, label_ui, assess, report, plot, run, store_group,
                spec_group, measures_group):
    cli.add_command(command)


def main(argv=None):
    cli.main(args=argv, prog_name="ml4ml")


if __name__ == "__main__":
    main()
