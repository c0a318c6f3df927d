"""``ml4ml measures rank``: which single measure agrees with the labels."""

from __future__ import annotations

import click

from ml4ml.cli.common import CONTEXT, user_errors


@click.group("measures", context_settings=CONTEXT)
def measures_group():
    """Look at the measures of a store one by one."""


def rank_lines(report, top: int = 10) -> list[str]:
    """The command's output: a header, then the best ``top`` measures."""
    ds = report.rank
    lines = [f"rank {report.transform}: {report.n_columns} measure(s) of "
             f"{report.n_models} labelled model(s) (labels '{report.label_source}'; "
             f"{ds.attrs['n_holdout']} hold-out, {ds.attrs['n_regular']} regular), "
             f"{report.n_scored} scored, in {report.seconds:.1f} s"]
    if report.unlabelled:
        lines.append(f"  not ranked on (no label): {report.unlabelled} model(s)")
    lines.append(f"  {'#':>4s} {'measure':44s} {'family':8s} {'AUC':>6s} "
                 f"{'95% interval':>13s} {'acc':>6s} {'chosen':>6s}")
    shown = ds.isel(score=slice(0, top))
    for k in range(shown.sizes["score"]):
        row = {name: shown[name].values[k] for name in shown.data_vars}
        if row["rank_reason"]:
            break
        sign = "" if row["rank_direction"] > 0 else " (-)"
        lines.append(f"  {int(row['rank_position']):4d} {str(shown['score'].values[k]) + sign:44s} "
                     f"{row['rank_family']:8s} {row['rank_auc']:6.3f} "
                     f"{row['rank_auc_low']:6.3f}-{row['rank_auc_high']:.3f} "
                     f"{row['rank_accuracy']:6.3f} {row['rank_chosen']:6.2f}")
    unscored = report.n_columns - report.n_scored
    if unscored:
        lines.append(f"  {unscored} measure(s) not scored (NaN or constant; rank_reason "
                     "says why), ranked last")
    lines.append(f"  AUC: hold-out models, direction learned on the regular ones ((-): "
                 f"smaller means invariant); interval: {int(100 * ds.attrs['confidence'])}% "
                 f"bootstrap; acc: hold-out accuracy of the best threshold on the regular "
                 f"models; chosen: share of the {3 * ds.attrs['repeats']} training parts "
                 f"choosing it as best single feature")
    lines.append(f"  written to assess/{report.transform}/rank")
    return lines


@measures_group.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--transform", required=True, help="Transform to rank, e.g. rotation.")
@click.option("--suite", help="Suite (needed when the transform was measured on several).")
@click.option("--labels", metavar="SOURCE",
              help="Label source (default: the labels last written).")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True,
              help="Repeats of the three-fold protocol (how often a measure is chosen).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the protocol's splits and of the bootstrap.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=2), default=2000,
              show_default=True, help="Bootstrap resamples of the AUC interval.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many measures to print.")
@user_errors
def rank(store_path, transform, suite, labels, repeats, seed, n_boot, top):
    """Rank EVERY single measure by how well it alone agrees with the labels.

    \b
    ml4ml measures rank stores/demo-digits.zarr --transform rotation

    Every matrix measure (level x split x interval x measure) and every response measure
    (level x response measure) is scored under the paper's protocol: its direction and
    best threshold learned on the regular models, its ROC AUC (with a bootstrap interval)
    and threshold accuracy measured on the hold-out models, and how often the
    best-single-feature baseline chose it. Written to assess/<transform>/rank (dim score).
    """
    from ml4ml.assess.rank_stage import rank_store
    from ml4ml.store import require_store

    require_store(store_path, "labels", transform=transform, suite=suite)
    report = rank_store(store_path, transform, suite=suite, labels=labels, repeats=repeats,
                        seed=seed, n_boot=n_boot)
    for line in rank_lines(report, top):
        click.echo(line)
