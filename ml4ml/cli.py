"""The ``ml4ml`` command: parses arguments and calls the library, nothing else."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path

import click

from ml4ml import __version__
from ml4ml.errors import ML4MLError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _user_errors(func):
    """ML4MLError -> one clear line on stderr and exit status 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ML4MLError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def _cluster_options(func):
    func = click.option("--scheduler", metavar="ADDRESS",
                        help="Run on an existing dask cluster, e.g. tcp://127.0.0.1:8786.")(func)
    func = click.option("--workers", type=click.IntRange(min=1), metavar="N",
                        help="Start a local dask cluster of N worker processes.")(func)
    return func


def _quiet_option(func):
    return click.option("-q", "--quiet", is_flag=True, help="No progress bars.")(func)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="ml4ml")
def cli():
    """Invariance testing of whole model databases (ML4ML, arXiv 2109.12926).

    \b
    A pipeline spec (TOML) describes a model zoo, test suites and transformation grids;
    every stage reads and writes ONE Zarr store:
      ml4ml validate pipelines/demo-digits.toml   check a spec
      ml4ml train    pipelines/demo-digits.toml   train the zoo's models
      ml4ml probe    pipelines/demo-digits.toml   responses over the grids -> store
      ml4ml measure  stores/demo-digits.zarr      variance matrices + measures
      ml4ml features stores/demo-digits.zarr --transform rotation -o features.csv
      ml4ml run      pipelines/demo-digits.toml   all of the above
    """


@cli.command(context_settings=CONTEXT)
@click.argument("pipeline", type=click.Path(dir_okay=False))
@_user_errors
def validate(pipeline):
    """Check a pipeline spec and list every problem.

    PIPELINE is a spec file, e.g. pipelines/demo-digits.toml.
    """
    from ml4ml.config import load_pipeline

    p = load_pipeline(pipeline)
    n_hold = sum(r.holdout for r in p.recipes)
    grids = ", ".join(f"{t} ({len(g)} values {g[0]:g}..{g[-1]:g})" for t, g in p.transforms.items())
    click.echo(f"{pipeline}: ok: {len(p.recipes)} models ({len(p.recipes) - n_hold} regular, "
               f"{n_hold} hold-out); suites {', '.join(s.name for s in p.suites)}; {grids}; "
               f"store {p.store}")


@cli.command(context_settings=CONTEXT)
@click.argument("pipeline", type=click.Path(dir_okay=False))
@_cluster_options
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: the spec's).")
@click.option("--force", is_flag=True, help="Retrain models that are already trained.")
@_quiet_option
@_user_errors
def train(pipeline, workers, scheduler, device, force, quiet):
    """Train the zoo's models that are not trained yet.

    PIPELINE is a spec file, e.g. pipelines/demo-digits.toml; checkpoints go beside the store.
    """
    from ml4ml.cluster import dask_client
    from ml4ml.config import load_pipeline
    from ml4ml.zoo.stage import train_pipeline

    p = load_pipeline(pipeline)
    with dask_client(workers, scheduler) as client:
        report = train_pipeline(p, client=client, force=force, device=device, progress=not quiet)
    click.echo(f"trained {len(report.trained)} model(s), {len(report.skipped)} already trained, "
               f"in {report.seconds:.1f} s; store {p.store}")


@cli.command(context_settings=CONTEXT)
@click.argument("pipeline", type=click.Path(dir_okay=False))
@_cluster_options
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: the spec's).")
@click.option("--force", is_flag=True, help="Probe again models that are already done.")
@_quiet_option
@_user_errors
def probe(pipeline, workers, scheduler, device, force, quiet):
    """Probe trained models over the transformation grids.

    Every trained model of PIPELINE x its suites x its transforms; done models are skipped.
    """
    from ml4ml.cluster import dask_client
    from ml4ml.config import load_pipeline
    from ml4ml.probe.stage import probe_pipeline

    p = load_pipeline(pipeline)
    with dask_client(workers, scheduler) as client:
        report = probe_pipeline(p, client=client, device=device, force=force,
                                progress=not quiet)
    click.echo(f"probed {len(report.probed)} (model, suite, transform), {report.skipped} "
               f"already done, in {report.seconds:.1f} s; store {p.store}")


@cli.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--suite", help="Only this suite's probe groups.")
@click.option("--transform", help="Only this transform's probe groups.")
@click.option("--measure", "measures", multiple=True, metavar="NAME",
              help="Compute only these registered measures (repeatable; default: all).")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import a module or .py file first (it may call register_measure).")
@click.option("--force", is_flag=True, help="Measure again models that are already measured.")
@_cluster_options
@_quiet_option
@_user_errors
def measure(store_path, suite, transform, measures, plugins, force, workers, scheduler, quiet):
    """Variance matrices and measures of probed models.

    Every done, unmeasured model of STORE, in one dask graph.

    STORE is a path or fsspec URL, e.g. stores/demo-digits.zarr.
    """
    from ml4ml.cluster import dask_client
    from ml4ml.measure.stage import measure_store

    for plugin in plugins:
        _import_plugin(plugin)
    with dask_client(workers, scheduler):
        reports = measure_store(store_path, suite=suite, transform=transform,
                                measures=list(measures) or None, force=force,
                                progress=not quiet)
    for report in reports:
        click.echo(report.summary())


@cli.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--transform", required=True, help="Transform whose measures to use, e.g. rotation.")
@click.option("--suite", help="Suite (needed when the transform was probed on several).")
@click.option("--set", "feature_set", default="paper80", show_default=True,
              help="Feature set.")
@click.option("--split", default="correct", show_default=True,
              type=click.Choice(["all", "correct", "incorrect"]), help="Sample split.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="CSV file to write, e.g. features.csv.")
@_user_errors
def features(store_path, transform, suite, feature_set, split, output):
    """Write assessor features to CSV, one row per model.

    Columns: mid, then the feature set's features in order (paper80: docs/measures.md).
    """
    from ml4ml.measure.stage import store_features

    table = store_features(store_path, transform, suite=suite, set=feature_set, split=split)
    table.to_csv(output, index=False)
    click.echo(f"wrote {len(table)} model(s) x {table.shape[1] - 1} features to {output}")


@cli.command("import-legacy", context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--mid", required=True, help="Model id (hold-out ids start with 't').")
@click.option("--results", required=True, type=click.Path(dir_okay=False),
              help="The reference's test_results*.npy (or .npy.gz).")
@click.option("--act", required=True, type=click.Path(dir_okay=False),
              help="The reference's test_actoverall*.npy (or .npy.gz).")
@click.option("--transform", default="rotation", show_default=True,
              type=click.Choice(["rotation", "brightness", "scaling"]))
@click.option("--suite", default="legacy", show_default=True, help="Suite name to file it under.")
@click.option("--force", is_flag=True, help="Overwrite a model already imported.")
@_user_errors
def import_legacy(store_path, mid, results, act, transform, suite, force):
    """Import the reference's .npy files of one model.

    STORE is created if needed (float64); bad files leave it untouched.
    """
    from ml4ml.store.importing import import_legacy as run_import

    probe_ds = run_import(store_path, mid, results, act, transform=transform, suite=suite,
                          force=force)
    click.echo(f"imported {mid}: {probe_ds.sizes['aug_param']} parameters x "
               f"{probe_ds.sizes['sample']} samples x {probe_ds.sizes['layer']} layers into "
               f"{store_path} (probes/{suite}/{transform})")


@cli.command(context_settings=CONTEXT)
@click.argument("pipeline", type=click.Path(dir_okay=False))
@_cluster_options
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: the spec's).")
@_quiet_option
@_user_errors
def run(pipeline, workers, scheduler, device, quiet):
    """Train, probe, measure, and write the features CSV.

    PIPELINE is a spec file, e.g. pipelines/demo-digits.toml.
    """
    from ml4ml.cluster import dask_client
    from ml4ml.config import load_pipeline
    from ml4ml.measure.stage import measure_store, store_features
    from ml4ml.probe.stage import probe_pipeline
    from ml4ml.zoo.stage import train_pipeline

    p = load_pipeline(pipeline)
    with dask_client(workers, scheduler) as client:
        t = train_pipeline(p, client=client, device=device, progress=not quiet)
        click.echo(f"train: {len(t.trained)} trained, {len(t.skipped)} already ({t.seconds:.1f} s)")
        pr = probe_pipeline(p, client=client, device=device, progress=not quiet)
        click.echo(f"probe: {len(pr.probed)} probed, {pr.skipped} already ({pr.seconds:.1f} s)")
        for report in measure_store(p.store, progress=not quiet):
            click.echo(f"measure: {report.summary()}")
    suite = p.assess.suite or p.suites[0].name
    table = store_features(p.store, p.assess.transform, suite=suite, set=p.assess.features,
                           split=p.assess.split)
    out = Path(str(p.store).rstrip("/") + f".{p.assess.transform}.{p.assess.features}.csv")
    if "://" not in str(p.store):
        table.to_csv(out, index=False)
        click.echo(f"features: {len(table)} model(s) -> {out}")


def _import_plugin(plugin: str):
    try:
        if plugin.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(plugin).stem, plugin)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {plugin}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(plugin)
    except (ImportError, OSError, SyntaxError) as exc:
        raise ML4MLError(f"cannot import plugin: {exc}", file=plugin, field="--plugin") from exc


def main(argv=None):
    cli.main(args=argv, prog_name="ml4ml")


if __name__ == "__main__":
    main()
