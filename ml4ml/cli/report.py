"""``ml4ml report`` and ``ml4ml plot``: the static HTML report, one model's matrices."""

from __future__ import annotations

import click

from ml4ml.cli.common import CONTEXT, output_file, quiet_option, user_errors


def _view_options(func):
    func = click.option("--vmax", type=float, metavar="X",
                        help="Maximum of every matrix colour scale (default: each level's "
                             "99th percentile over the models).")(func)
    func = click.option("--split", default="all", show_default=True,
                        type=click.Choice(["all", "correct", "incorrect"]),
                        help="Sample split of the matrices shown.")(func)
    func = click.option("--suite", help="Suite (default: the first measured).")(func)
    func = click.option("--transform", help="Transform (default: the first measured).")(func)
    return func


@click.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              metavar="DIR", help="Folder to write index.html and its figures into.")
@_view_options
@quiet_option
@user_errors
def report(store_path, output, transform, suite, split, vmax, quiet):
    """Write the report: a static index.html with PNG figures (opens without a server).

    \b
    ml4ml report stores/demo-digits.zarr -o stores/demo-digits.report

    Per model the confidence and layer variance matrices on one colour scale across
    models, accuracy against the parameter coloured by label, a gallery sorted by the
    assessor's score, the assessor and baseline table with the comparison, the top
    features and a summary of the database (recipes x outcomes).
    """
    from pathlib import Path

    from ml4ml.report.stage import report_store
    from ml4ml.store import require_store

    require_store(store_path, "measures", transform=transform, suite=suite)
    output_file(Path(output), "-o")  # its parent folder must exist
    result = report_store(store_path, output, transform=transform, suite=suite, split=split,
                          vmax=vmax, progress=not quiet)
    click.echo(f"report of {result.n_models} model(s), {result.n_figures} figures, in "
               f"{result.seconds:.1f} s: {result.index}")


@click.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--mid", required=True, help="Model id, e.g. m001.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              metavar="FILE.png", help="PNG file to write.")
@_view_options
@user_errors
def plot(store_path, mid, output, transform, suite, split, vmax):
    """Draw one model's strip of variance matrices (as the reference's plot tool did).

    \b
    ml4ml plot stores/demo-digits.zarr --mid m001 -o m001.png
    """
    from ml4ml.report.stage import plot_model
    from ml4ml.store import require_store

    require_store(store_path, "measures", transform=transform, suite=suite)
    output = output_file(output)
    plot_model(store_path, mid, output, transform=transform, suite=suite, split=split,
               vmax=vmax)
    click.echo(f"wrote {output}")
