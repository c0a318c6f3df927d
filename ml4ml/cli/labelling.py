"""``ml4ml label`` (labels of models: import, show, agreement, merge, learning curves) and
``ml4ml label-ui`` (the labelling page, one private URL per invited rater)."""

from __future__ import annotations

import math

import click
import numpy as np

from ml4ml.cli.common import CONTEXT, user_errors

__all__ = ["label", "label_ui"]


def _number(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


@click.command("label-ui", context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--transform", required=True, help="Transform to label, e.g. rotation.")
@click.option("--rater", "raters", required=True, multiple=True, metavar="NAME",
              help="An invited rater (repeatable): each gets a private URL of their own.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (127.0.0.1: this machine only; 0.0.0.0: the network, "
                   "over plain HTTP).")
@click.option("--suite", help="Suite (default: the first measured for the transform).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of every rater's random order (and of the overlap).")
@click.option("--overlap", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N",
              help="Ask every rater the same N models first (a seeded random sample; each "
                   "rater in their own order), so that 'ml4ml label --agreement' measures "
                   "their agreement after N labels; then the rest in the --order.")
# the orders of ml4ml.labelling.order.ORDERS
@click.option("--order", type=click.Choice(["seeded", "active"]), default="seeded",
              show_default=True,
              help="In what order each rater is asked: seeded = a random order of their own; "
                   "active = 10 random models, then mostly the one the assessor (fit on "
                   "that rater's labels) is least sure of, 20% random.")
@click.option("--guideline", "guideline_file", metavar="FILE",
              help="A text file shown to the raters as the guideline (default: the spec's "
                   "[labels] guideline, else one for the transform).")
@click.option("--access", "access_file", metavar="FILE",
              help="Where the raters' tokens are kept (default: STORE.label-ui.json beside "
                   "a local store; docs/labelling.md).")
@user_errors
def label_ui(store_path, transform, raters, port, host, suite, seed, overlap, order,
             guideline_file, access_file):
    """Serve the labelling page: invited raters label models in the browser, saved as they go.

    \b
    ml4ml label-ui stores/demo-digits.zarr --transform rotation --rater ann --rater bob
    ml4ml label-ui stores/demo-digits.zarr --transform rotation --rater ann --rater bob \
        --overlap 20 --order active

    Prints one private URL per rater (http://HOST:PORT/?token=TOKEN; the same one on every
    start). Each rater sees one model at a time under an alias of their own (its variance
    matrices and accuracy, nothing of its id, recipe or other raters), keys i / v / s and
    arrows; every label is written to the store at once. With --overlap N every rater is
    asked the same N models first. Measure agreement and merge raters with
    'ml4ml label STORE --transform T --agreement --merge majority'.
    """
    import socket

    from ml4ml.errors import InputError
    from ml4ml.labelling.access import check_raters
    from ml4ml.labelling.guard import WILDCARD, is_loopback
    from ml4ml.store import require_store

    raters = check_raters(raters)
    guideline = _read_guideline(guideline_file) if guideline_file else None
    require_store(store_path, "measures", transform=transform, suite=suite)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait from now on, until the server takes them
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}",
                         field="--port", hint="choose another port, or --port 0") from None
    try:
        app = _app(store_path, transform, raters, suite, seed, overlap, order, guideline,
                   host, access_file)
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    if not is_loopback(host):
        click.echo(f"warning: serving on {host}, beyond this machine, over plain HTTP: "
                   "anyone on the network path can read the raters' tokens and labels; "
                   "use a trusted network, or an HTTPS proxy in front", err=True)
    name = socket.gethostname() if host in WILDCARD else host
    name = f"[{name}]" if ":" in name else name
    click.echo(f"labelling {transform}: one private URL per rater (tokens kept in "
               f"{app.state.access.file}; Ctrl-C stops; every label is already saved)")
    for rater in raters:
        click.echo(f"  {rater}: http://{name}:{bound}/?token={app.state.access.tokens[rater]}")
    import uvicorn

    config = uvicorn.Config(app, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def _app(store_path, transform, raters, suite, seed, overlap, order, guideline, host,
         access_file):
    from ml4ml.labelling.app import create_app

    return create_app(store_path, transform, raters, suite=suite, seed=seed, order=order,
                      overlap=overlap, guideline=guideline, host=host,
                      access_file=access_file)


def _read_guideline(file) -> str:
    from pathlib import Path

    from ml4ml.errors import InputError

    try:
        text = Path(file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise InputError(f"cannot read the guideline: {why}", file=file,
                         field="--guideline") from None
    if not text:
        raise InputError("the guideline is empty", file=file, field="--guideline")
    return text


# ----------------------------------------------------------------------------- ml4ml label
@click.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.option("--transform", required=True, help="Transform the labels are for, e.g. rotation.")
@click.option("--from", "source", metavar="FILE|recipe",
              help="Import labels: a mid,label CSV or the reference's mlabel.txt, or 'recipe' "
                   "for the recipe proxy (docs/label.md).")
@click.option("--as", "name", metavar="NAME",
              help="Name of the source in the store (default: 'file' or 'recipe').")
@click.option("--show", is_flag=True,
              help="List every model's labels per source and rater, and each rater's counts.")
@click.option("--agreement", is_flag=True,
              help="Inter-rater agreement of the expert ratings (labelling page), on the "
                   "models both (all) raters labelled, with their counts.")
@click.option("--merge", type=click.Choice(["majority"]),
              help="Merge the expert ratings into the source 'expert' (ties stay unknown).")
@click.option("--learning-curve", "curve", is_flag=True,
              help="The assessor's accuracy on the models not yet labelled, estimated from "
                   "the random picks, against the number of expert labels, per rater (or of "
                   "the current labels, in a seeded random order).")
@click.option("--rater", metavar="NAME", help="With --learning-curve: this rater only.")
@click.option("--plot", metavar="FILE.png", type=click.Path(dir_okay=False),
              help="With --learning-curve: also draw it, e.g. --plot curve.png.")
@click.option("--suite", help="Suite whose measured models the ratings are counted over (as "
                              "on the labelling page; default: the first measured).")
@user_errors
def label(store_path, transform, source, name, show, agreement, merge, curve, rater, plot,
          suite):
    """Label models invariant (1) or variant (0) for a transform.

    \b
    ml4ml label stores/demo-digits.zarr --transform rotation --from recipe
    ml4ml label stores/db.zarr --transform rotation --from mlabel.txt
    ml4ml label stores/db.zarr --transform rotation --show
    ml4ml label stores/db.zarr --transform rotation --agreement --merge majority
    ml4ml label stores/db.zarr --transform rotation --learning-curve --rater ann

    The labels last written are the ones 'ml4ml assess' uses (or its --labels SOURCE).
    Expert ratings (from 'ml4ml label-ui') are counted over the models measured for the
    transform, the models the labelling page shows: --show, --agreement and the page
    count the same set.
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
    require_store(store_path, "measures" if curve else "probes", transform=transform,
                  suite=suite)
    if source:
        _import(store_path, transform, source, name)
    if agreement:
        _agreement(store_path, transform, suite)
    if merge:
        _merge(store_path, transform)
    if show:
        _show(store_path, transform, suite)
    if curve:
        _learning_curve(store_path, transform, rater, plot, suite)


def _learning_curve(store_path, transform, rater, plot, suite):
    from ml4ml.labelling.active import ESTIMATOR, learning_curve_png, rater_learning_curve
    from ml4ml.store.labels import read_labels

    if rater is None:
        ds = read_labels(store_path, transform)
        rated = [] if ds is None else [
            str(r) for r, row in zip(ds["rater"].values, np.asarray(ds["rating"].values))
            if np.isin(row, (0, 1)).any()]
        curves = {f"rater {r}": rater_learning_curve(store_path, transform, r, suite=suite)
                  for r in rated}
        if not curves:  # no expert ratings: the current labels
            frame = rater_learning_curve(store_path, transform, suite=suite)
            curves = {frame.attrs["who"]: frame}
    else:
        curves = {f"rater {rater}": rater_learning_curve(store_path, transform, rater,
                                                         suite=suite)}
    for who, frame in curves.items():
        attrs = frame.attrs
        picks = ", ".join(f"{k} {v}" for k, v in attrs["picks"].items())
        click.echo(f"{transform}, {who}: {attrs['n_labels']} label(s), in {attrs['order']}; "
                   f"{attrs['n_scored']} random pick(s) scored, "
                   f"{attrs['n_labels'] - attrs['n_scored']} fit on only (picks: {picks})")
        if attrs["unrecorded"]:
            click.echo(f"  {attrs['unrecorded']} label(s) given before the store recorded how "
                       "models were picked count as random picks")
        if frame.empty:
            click.echo("  fewer than 10 labels: no curve yet")
            continue
        click.echo(f"  {'labels':>6s}  {'scored':>6s}  {'accuracy':>8s}  {'se':>5s}  folds")
        for row in frame.itertuples():
            click.echo(f"  {row.n_labels:6d}  {row.n_scored:6d}  {_number(row.accuracy):>8s}  "
                       f"{_number(row.se):>5s}  {row.n_folds:5d}")
    click.echo(f"({ESTIMATOR}; se: its standard error; n/a: a class has fewer than 2 "
               "labels, or there are fewer than 2 random picks)")
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


def _counted(store_path, transform, suite):
    """(suite, mids) the ratings are counted over (``labelling.counts.page_models``), or
    (None, None) when no model is measured for ``transform`` (in ``suite``) yet."""
    from ml4ml import store
    from ml4ml.labelling.counts import page_models

    if not any(t == transform and suite in (None, s)
               for s, t in store.list_groups(store_path, "measures")):
        return None, None
    return page_models(store_path, transform, suite)


def _show(store_path, transform, suite):
    from ml4ml.labelling.counts import rating_counts, set_text
    from ml4ml.store.labels import read_labels

    ds = read_labels(store_path, transform)
    if ds is None:
        click.echo(f"{store_path}: no labels for {transform} yet")
        return
    suite, counted = _counted(store_path, transform, suite)
    mids = [str(m) for m in ds["mid"].values]
    sources = [str(s) for s in ds["source"].values]
    current = str(ds.attrs.get("current_source", ""))
    raters = [str(r) for r in ds["rater"].values]
    header = ["mid"] + [f"{s}{'*' if s == current else ''}" for s in sources] + \
             [f"rater:{r}" for r in raters] + (["measured"] if counted is not None else [])
    skipped = (np.asarray(ds["rating"].values) == -1) & ~np.isnat(ds["rated_at"].values)
    symbol = {1: "1", 0: "0", -1: "-"}
    labels = np.asarray(ds["label"].values)
    rating = np.asarray(ds["rating"].values)
    measured = set(counted or ())
    rows = []
    for k, mid in enumerate(mids):
        row = [mid] + [symbol[int(v)] for v in labels[k]]
        row += ["s" if skipped[i, k] else symbol[int(v)] for i, v in enumerate(rating[:, k])]
        rows.append(row + ([("yes" if mid in measured else "no")] if counted is not None
                           else []))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    click.echo(f"(* current source: {current or 'none'}; 1 invariant, 0 variant, s skipped, "
               "- unknown or not rated)")
    if counted is None:
        click.echo(f"no model is measured for {transform} yet: the labelling page has none "
                   "to show")
        return
    _counts_lines(rating_counts(ds, counted), set_text(transform, suite, len(counted)))
    outside = [m for m in mids if m not in measured]
    if outside:
        click.echo(f"{len(outside)} more model(s) in the store are not measured for "
                   f"{transform} (measured: no): not on the page, not counted: "
                   f"{', '.join(outside[:10])}{', ...' if len(outside) > 10 else ''}")


def _counts_lines(counts, what):
    """Each rater's counts over the counted set, one line each (as the page counts)."""
    if not counts:
        return
    click.echo(f"ratings counted over {what}, the models the labelling page shows:")
    for rater, c in counts.items():
        click.echo(f"  {rater}: {c['labelled']} of {c['total']} labelled ({c['invariant']} "
                   f"invariant, {c['variant']} variant), {c['skipped']} skipped, "
                   f"{c['unrated']} not rated"
                   + (f"; {c['outside']} rating(s) of models not measured now, not counted"
                      if c["outside"] else ""))


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


def _agreement(store_path, transform, suite):
    from ml4ml.assess.labels import agreement, recipe_labels
    from ml4ml.labelling.counts import set_text
    from ml4ml.store import read_models
    from ml4ml.store.labels import PICK, PICKS

    ds = _ratings(store_path, transform)
    suite, counted = _counted(store_path, transform, suite)
    if counted is not None:  # the page's models, in the labels group's order
        ds = ds.sel(mid=[m for m in ds["mid"].values if str(m) in set(counted)])
        what = set_text(transform, suite, len(counted))
    else:
        what = f"the {ds.sizes['mid']} model(s) of the store (none measured yet)"
    ratings = np.asarray(ds["rating"].values)
    skipped = (ratings == -1) & ~np.isnat(np.asarray(ds["rated_at"].values))
    shared = np.asarray(ds[PICK].values) == PICKS["overlap"]
    raters = [str(r) for r in ds["rater"].values]
    recipe = None
    try:
        from ml4ml.assess.stage import _tested_grid

        by_mid = recipe_labels(read_models(store_path), transform,
                               _tested_grid(store_path, transform))
        recipe = np.array([by_mid.get(str(m), -1) for m in ds["mid"].values])
    except Exception:  # noqa: BLE001 - no recipes or probes: agreement without the proxy
        recipe = None
    if recipe is not None and not (recipe >= 0).any():
        recipe = None  # no model has a recipe (imported, or trained elsewhere)
    result = agreement(ratings, raters, recipe, skipped=skipped, shared=shared)
    n = len(counted) if counted is not None else ds.sizes["mid"]
    click.echo(f"ratings for {transform} by {len(raters)} rater(s), counted over {what}:")
    for rater, c in result["counts"].items():
        unrated = n - c["invariant"] - c["variant"] - c["skipped"]
        click.echo(f"  {rater}: {c['invariant']} invariant, {c['variant']} variant, "
                   f"{c['skipped']} skipped, {unrated} not rated")
    for (a, b), pair in result["pairwise"].items():
        click.echo(f"  overlap of {a} and {b}: {pair['n']} model(s) both labelled "
                   f"({pair['n_overlap']} of them in the shared overlap both were asked "
                   f"first), {pair['skipped']} more rated by both but skipped by one or both")
        click.echo(f"  Cohen's kappa {a} / {b}: {_number(pair['kappa'])} on the {pair['n']} "
                   f"model(s) both labelled")
    if len(raters) > 2:
        click.echo(f"  Fleiss' kappa: {_number(result['fleiss_kappa'])} on the "
                   f"{result['n_fleiss']} model(s) every rater labelled")
    click.echo(f"  Krippendorff's alpha (nominal): {_number(result['krippendorff_alpha'])} on "
               f"the {result['n_alpha']} model(s) at least two raters labelled")
    for name, row in result["with_recipe"].items():
        click.echo(f"  with the recipe proxy, {name}: agreement {_number(row['agreement'])}, "
                   f"kappa {_number(row['kappa'])} on {row['n']} model(s)")
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
