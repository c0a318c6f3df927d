"""``ml4ml run``: every stage of a pipeline, resuming where the store stands."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from ml4ml.cli.common import (CONTEXT, answer_lines, beside_store, cluster_options,
                              device_option, pipeline_cluster, quiet_option, refused,
                              stage_log, user_errors, write_judgements)


@click.command(context_settings=CONTEXT)
@click.argument("pipeline")
@click.option("--store", "store_path", metavar="PATH",
              help="Store to use instead of the spec's [store] path (a folder or URL).")
@click.option("--report", "report_dir", metavar="DIR",
              help="Folder of the report (default: beside the store, STORE.report).")
@cluster_options
@device_option
@click.option("--force", is_flag=True, help="Redo every stage for every model.")
@quiet_option
@user_errors
def run(pipeline, store_path, report_dir, workers, scheduler, log, device, force, quiet):
    """Train, probe, measure, label, assess, rank the measures and report: the whole
    pipeline.

    \b
    ml4ml run pipelines/demo-digits.toml
    ml4ml run pipelines/demo-digits.toml --store stores/other.zarr --workers 2

    Every stage resumes: a rerun after an interruption finishes the rest and redoes
    nothing that was done. The closing summary names every output. A model that fails in
    a stage is named once in that stage's line; the others go on to the report, the exit
    status is 1 and a rerun retries only it.
    """
    from ml4ml.config import load_pipeline
    from ml4ml.measure.stage import measure_store
    from ml4ml.probe.stage import probe_pipeline
    from ml4ml.zoo.stage import train_pipeline

    p = load_pipeline(pipeline)
    if store_path:
        from ml4ml.config import _checkpoints

        p = replace(p, store=store_path,
                    checkpoints=_checkpoints(str(store_path).rstrip("/") + ".checkpoints"))
    progress = not quiet
    lines = []

    def say(line):
        lines.append(line)
        click.echo(line)

    with stage_log(p.store, log) as log:
        with pipeline_cluster(p, workers, scheduler) as client:
            t = train_pipeline(p, client=client, device=device, force=force,
                               progress=progress)
            say(f"train: {t.summary()} ({t.seconds:.1f} s)")
            pr = probe_pipeline(p, client=client, device=device, force=force,
                                progress=progress)
            say(f"probe: {pr.summary()} ({pr.seconds:.1f} s)")
            reports = measure_store(p.store, force=force, progress=progress)
            for report in reports:
                say(f"measure: {report.summary()}")
        outputs = _after_measures(p, force, progress, say, report_dir)
    failed = {**t.failed, **pr.failed_models()}
    for report in reports:
        failed.update(report.failed)
    _summary(p, outputs, failed)
    refused(p.file, failed, "train, probe or measure", log)


def _local_outputs(p) -> tuple[Path, Path]:
    """Where the features CSV and the report go: beside a local store, else here."""
    return (beside_store(p.store, f".{p.assess.transform}.{p.assess.features}.csv"),
            beside_store(p.store, ".report"))


def _after_measures(p, force, progress, say, report_dir=None) -> dict:
    from ml4ml.assess.stage import assess_store, feature_table, label_store, stored_labels
    from ml4ml.report.stage import report_store

    transform = p.assess.transform
    suite = p.assess.suite or p.suites[0].name
    csv, default_report = _local_outputs(p)
    report_dir = Path(report_dir) if report_dir else default_report
    table, unmeasured = feature_table(p.store, transform, suite=suite, set=p.assess.features,
                                      split=p.assess.split)
    table.drop(columns=["holdout", "partition", "robust_accuracy"]).to_csv(csv, index=False)
    say(f"features: {len(table)} model(s) -> {csv}"
        + (f" ({len(unmeasured)} without measures)" if unmeasured else ""))
    # labels: from the spec's source, rewritten only when they would change
    source = p.assess.label_source
    if source == "store":
        name, labels = stored_labels(p.store, transform)
        say(f"label: the store's labels '{name}' ({sum(v >= 0 for v in labels.values())} "
            "model(s))")
    else:
        current = None
        try:
            current = stored_labels(p.store, transform, "recipe" if source == "recipe"
                                    else "file")[1]
        except Exception:  # noqa: BLE001 - no labels yet
            current = None
        from ml4ml import store as store_module
        from ml4ml.assess.labels import read_label_file, recipe_labels

        if source == "recipe":
            import numpy as np

            wanted = recipe_labels(store_module.read_models(p.store), transform,
                                   np.asarray(p.transforms[transform]))
        else:
            wanted = read_label_file(source, transform, store_module.model_ids(p.store))
        if force or current is None or any(current.get(m, -1) != v for m, v in wanted.items()):
            result = label_store(p.store, transform, source, grid=p.transforms[transform])
            values = list(result["labels"].values())
            say(f"label: {values.count(1)} invariant, {values.count(0)} variant"
                + (f", {values.count(-1)} unknown" if -1 in values else "")
                + f" ({result['source']})")
        else:
            say(f"label: {'recipe' if source == 'recipe' else 'file'} labels already current")
    from ml4ml.assess.stage import ProtocolNotPossible

    skipped = ""
    try:
        report = assess_store(p.store, transform, suite=suite, assessors=p.assess.assessors,
                              repeats=p.assess.repeats, set=p.assess.features,
                              split=p.assess.split, progress=progress,
                              skip_current=not force)
    except ProtocolNotPossible as exc:  # too few models or one kind of label: the rest stands
        report, skipped = None, exc.message
        say(f"assess: skipped: {skipped}")
    else:
        if report is None:
            say("assess: results already current (same features, labels and settings)")
        else:
            say(f"assess: {report.n_models} labelled model(s), {report.seconds:.1f} s: "
                f"{report.comparison['verdict']}")
    judged = None if skipped else write_judgements(p.store, transform, suite)
    _rank(p, transform, suite, force, say)
    if not force and report is None and not skipped and \
            _report_current(report_dir, p.store, len(table)):
        say(f"report: already current ({report_dir / 'index.html'})")
        index = report_dir / "index.html"
    else:
        made = report_store(p.store, report_dir, transform=transform, suite=suite,
                            progress=progress)
        say(f"report: {made.n_models} model(s), {made.n_figures} figures "
            f"({made.seconds:.1f} s)")
        index = made.index
    return {"csv": csv, "report": index, "assess": report, "table": table,
            "skipped": skipped, "judgements": judged}


def _rank(p, transform, suite, force, say) -> None:
    """``ml4ml measures rank`` of the labelled store, for the report; redone only where
    the stored rank is stale (or ``force``); the report follows the rank it finds."""
    from ml4ml.assess.rank_stage import check_rank, rank_store, read_rank
    from ml4ml.errors import InputError, StoreError

    stored = None if force else read_rank(p.store, transform)
    if stored is not None and not check_rank(p.store, transform, stored):
        say("rank: already current (same labels and measures)")
        return
    try:
        made = rank_store(p.store, transform, suite=suite, repeats=p.assess.repeats)
    except (InputError, StoreError) as exc:  # too few labelled models: the rest stands
        say(f"rank: skipped: {getattr(exc, 'message', exc)}")
        return
    best = str(made.rank["score"].values[0]) if made.n_scored else "none scored"
    say(f"rank: {made.n_scored} of {made.n_columns} measure(s) scored on {made.n_models} "
        f"labelled model(s), best {best} ({made.seconds:.1f} s)")


def _report_current(folder: Path, store_path, n_models: int) -> bool:
    """Whether the report in ``folder`` was made from the store's present assessment and
    rank."""
    import json

    from ml4ml import store
    from ml4ml.report.stage import rank_stamp

    try:
        made = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    ds = store.open_group(store_path, store.assess_group(made.get("transform", "")))
    return (made.get("models") == n_models and (folder / "index.html").is_file()
            and made.get("assess_inputs") == ds.attrs.get("inputs_digest")
            and made.get("rank", "") == rank_stamp(store_path, made.get("transform", "")))


def _summary(p, outputs, failed) -> None:
    from ml4ml import store

    n_models = len(store.model_ids(p.store))
    if outputs["skipped"]:
        click.echo("")
        click.echo(f"store:    {p.store} ({n_models} models, {len(outputs['table'])} measured)")
        click.echo(f"verdict:  no assessment: {outputs['skipped']}")
        click.echo(f"features: {outputs['csv']}")
        click.echo(f"report:   {outputs['report']}  (open it in a browser)")
        _failed_line(failed)
        return
    ds = store.open_group(p.store, store.assess_group(p.assess.transform))
    path, judged = outputs["judgements"]
    click.echo("")
    click.echo(f"store:    {p.store} ({n_models} models, {ds.sizes['mid']} measured)")
    click.echo(f"verdict:  {ds.attrs['verdict']}")
    for line in answer_lines(judged, path):
        click.echo(line)
    click.echo(f"features: {outputs['csv']}")
    click.echo(f"report:   {outputs['report']}  (open it in a browser)")
    click.echo(f"next:     ml4ml assess {p.store} --transform {p.assess.transform} --predict "
               f"MID...   judges any model with the stored assessor")
    _failed_line(failed)


def _failed_line(failed) -> None:
    """How many models failed; the stage lines above named each once, with its reason."""
    if failed:
        click.echo(f"failed:   {len(failed)} model(s), named in the stage lines above; "
                   "rerun to retry only them")

