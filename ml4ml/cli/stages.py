"""The stage commands: validate, train, probe, measure, features, import-legacy."""

from __future__ import annotations

import click

from ml4ml.cli.common import (CONTEXT, cluster_options, device_option, import_plugin,
                              output_file, pipeline_cluster, quiet_option, refused, stage_log,
                              user_errors)


@click.command(context_settings=CONTEXT)
@click.argument("pipeline")
@user_errors
def validate(pipeline):
    """Check a pipeline spec and list every problem.

    PIPELINE is a spec file, e.g. pipelines/demo-digits.toml.
    """
    from ml4ml.config import load_pipeline

    p = load_pipeline(pipeline)
    own = _check_own_suites(p)
    n_hold = sum(r.holdout for r in p.recipes) + sum(a.holdout for a in p.added)
    n = len(p.mids)
    added = f", {len(p.added)} trained elsewhere" if p.added else ""
    grids = ", ".join(f"{t} ({len(g)} values {g[0]:g}..{g[-1]:g})" for t, g in p.transforms.items())
    click.echo(f"{pipeline}: ok: {n} models ({n - n_hold} regular, "
               f"{n_hold} hold-out{added}); suites {', '.join(own.get(s.name, s.name) for s in p.suites)}; "
               f"{grids}; store {p.store}")


def _check_own_suites(p) -> dict:
    """{name: "name (k classes)"} of the spec's own suites, their folders listed and npz
    labels read (no image decoded); InputError naming the file and field otherwise."""
    from ml4ml.data.own import check_spec_suite

    return {s.name: f"{s.name} ({len(check_spec_suite(s, spec_file=p.file))} classes)"
            for s in p.suites if s.own}


@click.command(context_settings=CONTEXT)
@click.argument("pipeline")
@cluster_options
@device_option
@click.option("--force", is_flag=True,
              help="Retrain models that are already trained (their later results are redone).")
@click.option("--changed", "changed_only", is_flag=True,
              help="Retrain exactly the models whose recipe in the spec changed.")
@quiet_option
@user_errors
def train(pipeline, workers, scheduler, log, device, force, changed_only, quiet):
    """Train the zoo's models that are not trained yet.

    PIPELINE is a spec file, e.g. pipelines/demo-digits.toml; checkpoints go beside the store.
    A model whose training fails is named once in the summary; the others are trained, the
    exit status is 1 and a rerun retries only it.
    """
    from ml4ml.config import load_pipeline
    from ml4ml.zoo.stage import train_pipeline

    p = load_pipeline(pipeline)
    with stage_log(p.store, log) as log, pipeline_cluster(p, workers, scheduler) as client:
        report = train_pipeline(p, client=client, force=force, changed_only=changed_only,
                                device=device, progress=not quiet)
    click.echo(f"train: {report.summary()}, in {report.seconds:.1f} s; store {p.store}")
    refused(p.file, report.failed, "train", log)


@click.command(context_settings=CONTEXT)
@click.argument("pipeline")
@cluster_options
@device_option
@click.option("--force", is_flag=True,
              help="Probe again models that are already done (their measures are redone).")
@quiet_option
@user_errors
def probe(pipeline, workers, scheduler, log, device, force, quiet):
    """Probe trained models over the transformation grids.

    Every trained model of PIPELINE x its suites x its transforms; done models are skipped,
    models whose checkpoint changed are probed again. A model that fails (checkpoint
    missing or replaced, images it cannot take, a forward that raises, NaN outputs) is
    named once in the summary; the others are probed, the exit status is 1 and a rerun
    retries only it.
    """
    from ml4ml.config import load_pipeline
    from ml4ml.probe.stage import probe_pipeline

    p = load_pipeline(pipeline)
    with stage_log(p.store, log) as log, pipeline_cluster(p, workers, scheduler) as client:
        report = probe_pipeline(p, client=client, device=device, force=force,
                                progress=not quiet)
    click.echo(f"probe: {report.summary()}, in {report.seconds:.1f} s; store {p.store}")
    refused(p.file, report.failed_models(), "probe", log)


@click.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--suite", help="Only this suite's probe groups.")
@click.option("--transform", help="Only this transform's probe groups.")
@click.option("--measure", "measures", multiple=True, metavar="NAME",
              help="Compute only these registered measures, matrix or response (repeatable; "
                   "default: all; a family none of whose names is given is computed whole).")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Import a module or .py file first (it may call register_measure or "
                   "register_response_measure).")
@click.option("--force", is_flag=True, help="Measure again models that are already measured.")
@cluster_options
@quiet_option
@user_errors
def measure(store_path, suite, transform, measures, plugins, force, workers, scheduler, log,
            quiet):
    """Variance matrices, matrix measures and response measures of probed models.

    Every done model of STORE not yet measured from its current probes, in one dask graph.
    Measures registered since (and the response measures of a store an earlier version
    measured) are added for the measured models from the stored matrices and probes.
    STORE is a path or fsspec URL, e.g. stores/demo-digits.zarr. Definitions:
    docs/measures.md. A model whose measures fail (probe data not finite, a registered
    measure that raises) is named once in the summary; the others are measured, the exit
    status is 1 and a rerun retries only it.
    """
    from ml4ml.cluster import dask_client
    from ml4ml.measure.stage import measure_store
    from ml4ml.store import require_store

    require_store(store_path, "probes", transform=transform, suite=suite)
    for plugin in plugins:
        import_plugin(plugin)
    with stage_log(store_path, log) as log, dask_client(workers, scheduler):
        reports = measure_store(store_path, suite=suite, transform=transform,
                                measures=list(measures) or None, force=force,
                                progress=not quiet)
    failed = {}
    for report in reports:
        click.echo(f"measure: {report.summary()}")
        failed.update(report.failed)
    refused(store_path, failed, "measure", log)


@click.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--transform", required=True, help="Transform whose measures to use, e.g. rotation.")
@click.option("--suite", help="Suite (needed when the transform was probed on several).")
@click.option("--set", "feature_set", default="paper80", show_default=True,
              help="Feature set: paper80, responses (every response measure) or all "
                   "(paper80 then responses).")
@click.option("--split", default="correct", show_default=True,
              type=click.Choice(["all", "correct", "incorrect"]), help="Sample split.")
@click.option("--level", "levels", multiple=True, metavar="LEVEL",
              help="Select levels instead of a set: confidence, or <layer>_<stat> such as "
                   "layer-1_max (layer-1: the last recorded layer), or by module name such "
                   "as conv3_max where every model recorded it (repeatable).")
@click.option("--stat", "stats", multiple=True, metavar="STAT",
              help="Select the layer levels of these statistics (repeatable).")
@click.option("--interval", "intervals", multiple=True, type=int, metavar="K",
              help="Select nested intervals (0 = the full grid; repeatable).")
@click.option("--measure", "names", multiple=True, metavar="NAME",
              help="Select measures (repeatable).")
@click.option("--with-labels", "labels", is_flag=False, flag_value="current", default=None,
              metavar="[SOURCE]", help="Add holdout, partition and the label (the current "
              "labels, or SOURCE's).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="CSV file to write, e.g. features.csv.")
@user_errors
def features(store_path, transform, suite, feature_set, split, levels, stats, intervals,
             names, labels, output):
    """Write assessor features to CSV, one row per measured model.

    Columns: mid, then the feature set's features in order (paper80: docs/measures.md),
    or any selection of level, statistic, interval and measure. Models without measures
    are listed on stderr.
    """
    from ml4ml.store import require_store

    require_store(store_path, "measures", transform=transform, suite=suite)
    output = output_file(output)
    selected = {key: list(value) for key, value in (("levels", levels), ("stats", stats),
                                                    ("intervals", intervals),
                                                    ("names", names)) if value}
    if selected:
        selected.setdefault("intervals", [0])
    from ml4ml.assess.stage import feature_table

    table, unmeasured = feature_table(store_path, transform, suite=suite, set=feature_set,
                                      split=split, selected=selected,
                                      labels=True if labels == "current" else labels)
    extra = 4  # holdout, partition, label, robust_accuracy
    if not labels:
        table = table.drop(columns=["holdout", "partition", "robust_accuracy"])
        extra = 0
    table.to_csv(output, index=False)
    click.echo(f"wrote {len(table)} model(s) x {table.shape[1] - 1 - extra} features to "
               f"{output}")
    if unmeasured:
        click.echo(f"not written (no measures for {transform}): {len(unmeasured)} model(s): "
                   f"{', '.join(unmeasured[:10])}{' ...' if len(unmeasured) > 10 else ''}",
                   err=True)


@click.command("import-legacy", context_settings=CONTEXT)
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
@user_errors
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
