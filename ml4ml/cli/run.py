"""``ml4ml run``: every stage of a pipeline, resuming where the store stands."""

from __future__ import annotations

from pathlib import Path

import click

from ml4ml.cli.common import CONTEXT, cluster_options, device_option, quiet_option, user_errors


@click.command(context_settings=CONTEXT)
@click.argument("pipeline", type=click.Path(dir_okay=False))
@cluster_options
@device_option
@quiet_option
@user_errors
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
