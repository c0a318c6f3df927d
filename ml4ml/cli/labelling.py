"""``ml4ml label-ui``: the labelling page, one private URL per invited rater."""

from __future__ import annotations

import click

from ml4ml.cli.common import CONTEXT, user_errors


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
              help="Seed of every rater's random order.")
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
                   "a local store; README, 'Expert labels in the browser').")
@user_errors
def label_ui(store_path, transform, raters, port, host, suite, seed, order, guideline_file,
             access_file):
    """Serve the labelling page: invited raters label models in the browser, saved as they go.

    \b
    ml4ml label-ui stores/demo-digits.zarr --transform rotation --rater ann --rater bob

    Prints one private URL per rater (http://HOST:PORT/?token=TOKEN; the same one on every
    start). Each rater sees one model at a time under an alias of their own (its variance
    matrices and accuracy, nothing of its id, recipe or other raters), keys i / v / s and
    arrows; every label is written to the store at once. Merge raters with
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
        app = _app(store_path, transform, raters, suite, seed, order, guideline, host,
                   access_file)
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


def _app(store_path, transform, raters, suite, seed, order, guideline, host, access_file):
    from ml4ml.labelling.app import create_app

    return create_app(store_path, transform, raters, suite=suite, seed=seed, order=order,
                      guideline=guideline, host=host, access_file=access_file)


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
