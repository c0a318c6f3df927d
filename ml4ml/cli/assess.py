"""``ml4ml assess``: assessors learned from the labelled models (``ml4ml label`` lives with
the labelling page, in ``cli.labelling``, and is re-exported here)."""

from __future__ import annotations

import math

import click

from ml4ml.cli.common import CONTEXT, quiet_option, user_errors
from ml4ml.cli.labelling import label  # noqa: F401 - the command's old home


def _format(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


@click.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.argument("predict_mids", nargs=-1, metavar="[MID]...")
@click.option("--transform", required=True, help="Transform to assess, e.g. rotation.")
@click.option("--suite", help="Suite (needed when the transform was probed on several).")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True,
              help="Repeats of the three-fold protocol.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of every split and estimator.")
@click.option("--labels", metavar="SOURCE",
              help="Label source to learn from (default: the labels last written).")
@click.option("--assessor", "assessors", multiple=True, metavar="NAME",
              help="Assessors to run (repeatable; default all six).")
@click.option("--features", "feature_set", default="paper80", show_default=True,
              metavar="SET", help="Feature set the assessors learn from: a name of "
              "ml4ml.measure.feature_sets.FEATURE_SETS (paper80, ...) or 'selection' (every "
              "level and measure, full interval).")
@click.option("--predict", "predict", is_flag=True,
              help="Judge the models MID... with the stored assessor instead.")
@quiet_option
@user_errors
def assess(store_path, predict_mids, transform, suite, repeats, seed, labels, assessors,
           feature_set, predict, quiet):
    """Learn invariance from the labelled models; compare with the formula baselines.

    \b
    ml4ml assess stores/demo-digits.zarr --transform rotation
    ml4ml assess stores/demo-digits.zarr --transform rotation --predict m001 t003

    Runs the paper's protocol (hold-out models one fold, the regular models split into two,
    train on two and test on the third, all three ways, --repeats times), prints every
    method's accuracy, F1 and kappa and whether the assessor chosen beats the baseline chosen,
    and writes it all, the refit assessor included, to the store's assess/<transform>;
    every model's judgement goes to STORE.<transform>.judgements.csv beside the store.
    """
    from ml4ml.errors import InputError
    from ml4ml.store import require_store

    if predict_mids and not predict:
        raise InputError(f"model ids {list(predict_mids)} given without --predict",
                         field="--predict", hint="add --predict to judge them")
    if predict:
        from ml4ml.assess.stage import predict as judge

        if not predict_mids:
            raise InputError("--predict needs model ids: --predict MID...", field="--predict")
        require_store(store_path, "assess", transform=transform, suite=suite)
        table = judge(store_path, transform, list(predict_mids), suite=suite)
        for row in table.itertuples():
            verdict = "invariant" if row.label == 1 else "variant"
            click.echo(f"{row.mid}: {verdict} (refit score {row.score:.3f}, {row.assessor} "
                       "refit on every labelled model)")
        return
    from ml4ml.assess.stage import assess_store
    from ml4ml.measure.feature_sets import FEATURE_SETS

    if feature_set not in FEATURE_SETS and feature_set != "selection":
        raise InputError(f"unknown feature set {feature_set!r}; known: "
                         f"{', '.join(FEATURE_SETS)}, selection", field="--features")
    require_store(store_path, "labels", transform=transform, suite=suite)
    report = assess_store(store_path, transform, suite=suite, labels=labels,
                          assessors=list(assessors) or None, repeats=repeats, seed=seed,
                          set=feature_set, progress=not quiet)
    if report.underpowered:
        from ml4ml.assess.comparison import MIN_LABELLED, MIN_PER_CLASS

        click.echo(f"warning: the comparison is underpowered: {report.underpowered} (needs at "
                   f"least {MIN_LABELLED} labelled models and {MIN_PER_CLASS} of each class); "
                   f"label more models before trusting its verdict", err=True)
    click.echo(print_assessment(report))
    from ml4ml.cli.common import answer_lines, write_judgements

    path, table = write_judgements(store_path, transform, suite)
    for line in answer_lines(table, path):
        click.echo(f"  {line}")


def print_assessment(report) -> str:
    lines = [f"assess {report.transform}: {report.n_models} labelled model(s) (labels "
             f"'{report.label_source}'), {report.summary.iloc[0]['n_evaluations']} "
             f"evaluations per method, in {report.seconds:.1f} s",
             f"  features: set '{report.feature_set}' ({report.n_features} columns)"]
    if report.unlabelled:
        lines.append(f"  not in the protocol (no label): {len(report.unlabelled)} model(s), "
                     f"e.g. {', '.join(report.unlabelled[:5])}")
    if report.unmeasured:
        lines.append(f"  not in the protocol (no measures): {len(report.unmeasured)} "
                     f"model(s), e.g. {', '.join(report.unmeasured[:5])}")
    lines.append(f"  {'method':26s} {'accuracy':>8s} {'min':>6s} {'max':>6s} {'sem':>6s} "
                 f"{'F1':>6s} {'kappa':>6s}")
    for method, row in report.summary.iterrows():
        lines.append(f"  {method:26s} {_format(row['accuracy_mean']):>8s} "
                     f"{_format(row['accuracy_min']):>6s} {_format(row['accuracy_max']):>6s} "
                     f"{_format(row['accuracy_sem']):>6s} {_format(row['f1_mean']):>6s} "
                     f"{_format(row['kappa_mean']):>6s}")
    from ml4ml.dims import module_note

    modules = getattr(report, "layer_modules", {})
    if report.best_feature:
        from ml4ml.assess.comparison import best_feature_text

        lines.append(f"  {best_feature_text(report.best_feature, modules)}")
    c = report.comparison
    lines.append(f"  verdict: {c['verdict']}")
    null = "every sign flip counted" if c["exact"] else f"{c['n_draws']:,} random sign flips"
    lines.append(f"  (the table: all {report.summary.iloc[0]['n_evaluations']} evaluations; "
                 f"the pair: chosen by {c['selection']}, fits that never saw a hold-out "
                 f"model; the verdict: the {c['n_models']} hold-out models only, predicted "
                 f"by fits on the regular models alone, {null})")
    top = ", ".join(f"{module_note(name, modules)} ({row['importance']:.3f})"
                    for name, row in report.top.head(5).iterrows())
    lines.append(f"  top features of {report.chosen} (permutation importance): {top}")
    return "\n".join(lines)

