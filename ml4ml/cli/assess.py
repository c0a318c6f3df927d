"""``ml4ml label`` and ``ml4ml assess``: labels of models, and assessors learned from them."""

from __future__ import annotations

import math

import click
import numpy as np

from ml4ml.cli.common import CONTEXT, quiet_option, user_errors


def _format(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


@click.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--transform", required=True, help="Transform the labels are for, e.g. rotation.")
@click.option("--from", "source", metavar="FILE|recipe",
              help="Import labels: a mid,label CSV or the reference's mlabel.txt, or 'recipe' "
                   "for the recipe proxy (README, 'Labels').")
@click.option("--as", "name", metavar="NAME",
              help="Name of the source in the store (default: 'file' or 'recipe').")
@click.option("--show", is_flag=True, help="List every model's labels per source.")
@click.option("--agreement", is_flag=True,
              help="Inter-rater agreement of the expert ratings (labelling page).")
@click.option("--merge", type=click.Choice(["majority"]),
              help="Merge the expert ratings into the source 'expert' (ties stay unknown).")
@click.option("--learning-curve", "curve", is_flag=True,
              help="Out-of-fold assessor accuracy against the number of expert labels, per "
                   "rater (or of the current labels, in a seeded random order).")
@click.option("--rater", metavar="NAME", help="With --learning-curve: this rater only.")
@click.option("--plot", metavar="FILE.png", type=click.Path(dir_okay=False),
              help="With --learning-curve: also draw it, e.g. --plot curve.png.")
@user_errors
def label(store_path, transform, source, name, show, agreement, merge, curve, rater, plot):
    """Label models invariant (1) or variant (0) for a transform.

    \b
    ml4ml label stores/demo-digits.zarr --transform rotation --from recipe
    ml4ml label stores/db.zarr --transform rotation --from mlabel.txt
    ml4ml label stores/db.zarr --transform rotation --show
    ml4ml label stores/db.zarr --transform rotation --agreement --merge majority
    ml4ml label stores/db.zarr --transform rotation --learning-curve --rater ann

    The labels last written are the ones 'ml4ml assess' uses (or its --labels SOURCE).
    """
    from ml4ml.errors import InputError
    from ml4ml.store import require_store

    for option, value in (("--rater", rater), ("--plot", plot)):
        if value and not curve:
            raise InputError(f"{option} goes with --learning-curve", field=option,
                             hint=f"add --learning-curve, or leave {option} out")
    actions = sum(bool(a) for a in (source, show, agreement, merge, curve))
    if actions == 0:
        raise InputError("say what to do: --from FILE|recipe, --show, --agreement, --merge "
                         "or --learning-curve", field="--from")
    if plot:
        from pathlib import Path

        if not Path(plot).resolve().parent.is_dir():
            raise InputError(f"no folder {str(Path(plot).parent)!r} to write {plot} into",
                             field="--plot", hint="make the folder, or name another file")
    require_store(store_path, "measures" if curve else "probes", transform=transform)
    if source:
        _import(store_path, transform, source, name)
    if agreement:
        _agreement(store_path, transform)
    if merge:
        _merge(store_path, transform)
    if show:
        _show(store_path, transform)
    if curve:
        _learning_curve(store_path, transform, rater, plot)


def _learning_curve(store_path, transform, rater, plot):
    from ml4ml.labelling.active import learning_curve_png, rater_learning_curve
    from ml4ml.store.labels import read_labels

    if rater is None:
        ds = read_labels(store_path, transform)
        rated = [] if ds is None else [
            str(r) for r, row in zip(ds["rater"].values, np.asarray(ds["rating"].values))
            if np.isin(row, (0, 1)).any()]
        curves = {f"rater {r}": rater_learning_curve(store_path, transform, r) for r in rated}
        if not curves:  # no expert ratings: the current labels
            frame = rater_learning_curve(store_path, transform)
            curves = {frame.attrs["who"]: frame}
    else:
        curves = {f"rater {rater}": rater_learning_curve(store_path, transform, rater)}
    for who, frame in curves.items():
        click.echo(f"{transform}, {who}: {frame.attrs['n_labels']} label(s), in "
                   f"{frame.attrs['order']}")
        if frame.empty:
            click.echo("  fewer than 10 labels: no curve yet")
            continue
        click.echo(f"  {'labels':>6s}  {'out-of-fold accuracy':>20s}  {'sd':>5s}  folds")
        for row in frame.itertuples():
            click.echo(f"  {row.n_labels:6d}  {_format(row.accuracy):>20s}  "
                       f"{_format(row.sd):>5s}  {row.n_folds:5d}")
    click.echo("(stratified k-fold within the first n labels, folds fewer where a class has "
               "fewer labels; sd over the folds; n/a: one class has fewer than 2 labels)")
    if plot:
        learning_curve_png(plot, curves, title=f"learning curve, {transform}")
        click.echo(f"wrote {plot}")


def _import(store_path, transform, source, name):
    from ml4ml.assess.stage import label_store

    result = label_store(store_path, transform, source, name=name)
    values = list(result["labels"].values())
    click.echo(f"labelled {sum(v >= 0 for v in values)} model(s) for {transform} from "
               f"{source}: {values.count(1)} invariant, {values.count(0)} variant"
               + (f", {values.count(-1)} unknown" if -1 in values else "")
               + f"; source '{result['source']}' (now the current labels)")
    if str(source) == "recipe" and -1 in values:
        click.echo(f"{values.count(-1)} model(s) have no recipe (trained elsewhere or "
                   f"imported) and are left unknown: label them with 'ml4ml label "
                   f"{store_path} --transform {transform} --from FILE' or 'ml4ml label-ui'",
                   err=True)


def _show(store_path, transform):
    from ml4ml.store.labels import read_labels

    ds = read_labels(store_path, transform)
    if ds is None:
        click.echo(f"{store_path}: no labels for {transform} yet")
        return
    sources = [str(s) for s in ds["source"].values]
    current = str(ds.attrs.get("current_source", ""))
    raters = [str(r) for r in ds["rater"].values]
    header = ["mid"] + [f"{s}{'*' if s == current else ''}" for s in sources] + \
             [f"rater:{r}" for r in raters]
    rows = []
    symbol = {1: "1", 0: "0", -1: "-"}
    for k, mid in enumerate(ds["mid"].values):
        row = [str(mid)] + [symbol[int(v)] for v in ds["label"].values[k]]
        row += [symbol[int(v)] for v in ds["rating"].values[:, k]]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    click.echo(f"(* current source: {current or 'none'}; 1 invariant, 0 variant, - unknown)")


def _ratings(store_path, transform):
    from ml4ml.errors import StoreError
    from ml4ml.store.labels import read_labels

    ds = read_labels(store_path, transform)
    if ds is None or ds.sizes.get("rater", 0) == 0:
        raise StoreError(f"the store has no expert ratings for {transform!r} yet",
                         file=store_path,
                         hint=f"rate models with 'ml4ml label-ui {store_path} --transform "
                              f"{transform} --rater NAME'")
    return ds


def _agreement(store_path, transform):
    from ml4ml.assess.labels import agreement, recipe_labels
    from ml4ml.store import read_models

    ds = _ratings(store_path, transform)
    ratings = np.asarray(ds["rating"].values)
    raters = [str(r) for r in ds["rater"].values]
    recipe = None
    try:
        from ml4ml.assess.stage import _tested_grid

        by_mid = recipe_labels(read_models(store_path), transform,
                               _tested_grid(store_path, transform))
        recipe = np.array([by_mid.get(str(m), -1) for m in ds["mid"].values])
    except Exception:  # noqa: BLE001 - no recipes or probes: agreement without the proxy
        recipe = None
    result = agreement(ratings, raters, recipe)
    click.echo(f"ratings for {transform} by {len(raters)} rater(s):")
    for rater, counts in result["counts"].items():
        click.echo(f"  {rater}: {counts['invariant']} invariant, {counts['variant']} variant, "
                   f"{counts['unlabelled']} unlabelled")
    for (a, b), pair in result["pairwise"].items():
        click.echo(f"  Cohen's kappa {a} / {b}: {_format(pair['kappa'])} on {pair['n']} "
                   f"model(s) both rated")
    click.echo(f"  Fleiss' kappa (models every rater rated): {_format(result['fleiss_kappa'])}")
    click.echo(f"  Krippendorff's alpha (nominal): {_format(result['krippendorff_alpha'])}")
    for name, row in result["with_recipe"].items():
        click.echo(f"  with the recipe proxy, {name}: agreement {_format(row['agreement'])}, "
                   f"kappa {_format(row['kappa'])} on {row['n']} model(s)")
    click.echo(f"  ties in a majority vote: {result['ties']}")


def _merge(store_path, transform):
    from ml4ml import store
    from ml4ml.assess.labels import majority
    from ml4ml.store.labels import write_labels

    ds = _ratings(store_path, transform)
    merged, tied = majority(np.asarray(ds["rating"].values))
    mids = [str(m) for m in ds["mid"].values]
    labels = {m: int(v) for m, v in zip(mids, merged) if v >= 0}
    raters = ", ".join(str(r) for r in ds["rater"].values)
    with store.writing(store_path, "ml4ml label --merge majority"):
        write_labels(store_path, transform, "expert", labels,
                     f"majority of the expert ratings of {raters}; ties unknown")
    ties = [m for m, t in zip(mids, tied) if t]
    click.echo(f"merged the ratings of {raters} into source 'expert': {len(labels)} model(s) "
               f"labelled ({list(labels.values()).count(1)} invariant), {len(ties)} tie(s)"
               + (f": {', '.join(ties)}" if ties else ""))


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
@click.option("--predict", "predict", is_flag=True,
              help="Judge the models MID... with the stored assessor instead.")
@quiet_option
@user_errors
def assess(store_path, predict_mids, transform, suite, repeats, seed, labels, assessors,
           predict, quiet):
    """Learn invariance from the labelled models; compare with the formula baselines.

    \b
    ml4ml assess stores/demo-digits.zarr --transform rotation
    ml4ml assess stores/demo-digits.zarr --transform rotation --predict m001 t003

    Runs the paper's protocol (hold-out models one fold, the regular models split into two,
    train on two and test on the third, all three ways, --repeats times), prints every
    method's accuracy, F1 and kappa and whether the best assessor beats the best baseline,
    and writes it all, the refit assessor included, to the store's assess/<transform>.
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

    require_store(store_path, "labels", transform=transform, suite=suite)
    report = assess_store(store_path, transform, suite=suite, labels=labels,
                          assessors=list(assessors) or None, repeats=repeats, seed=seed,
                          progress=not quiet)
    if report.underpowered:
        from ml4ml.assess.comparison import MIN_LABELLED, MIN_PER_CLASS

        click.echo(f"warning: the comparison is underpowered: {report.underpowered} (needs at "
                   f"least {MIN_LABELLED} labelled models and {MIN_PER_CLASS} of each class); "
                   f"label more models before trusting its verdict", err=True)
    click.echo(print_assessment(report))


def print_assessment(report) -> str:
    lines = [f"assess {report.transform}: {report.n_models} labelled model(s) (labels "
             f"'{report.label_source}'), {report.summary.iloc[0]['n_evaluations']} "
             f"evaluations per method, in {report.seconds:.1f} s"]
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
    lines.append(f"  (the table: all {report.summary.iloc[0]['n_evaluations']} evaluations; "
                 f"the verdict: the {c['n_models']} hold-out models only, predicted by fits "
                 f"on the regular models alone, {c['n_draws']} permutations)")
    top = ", ".join(f"{module_note(name, modules)} ({row['importance']:.3f})"
                    for name, row in report.top.head(5).iterrows())
    lines.append(f"  top features of {report.chosen} (permutation importance): {top}")
    return "\n".join(lines)

