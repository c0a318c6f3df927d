"""``ml4ml store check`` and ``ml4ml store repair``."""

from __future__ import annotations

import sys

import click

from ml4ml.cli.common import CONTEXT, user_errors


@click.group("store", context_settings=CONTEXT)
def store_group():
    """Check a store, or mend what a crash or a bug left in it."""


@store_group.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@user_errors
def check(store_path):
    """List every problem of STORE and how to mend it; exit 1 if there is one.

    Checks the schema, the committed layout, the chunk layout, unique model ids, done
    flags against the data, per-model checksums and lineage.
    """
    from ml4ml.store import require_store
    from ml4ml.store.check import check_store

    require_store(store_path)
    problems = check_store(store_path)
    if not problems:
        click.echo(f"{store_path}: ok")
        return
    for problem in problems:
        click.echo(f"{store_path}: {problem.line()}")
    click.echo(f"{len(problems)} problem(s); {sum(bool(p.repair) for p in problems)} "
               f"mended by 'ml4ml store repair {store_path}'", err=True)
    sys.exit(1)


@store_group.command(context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@user_errors
def repair(store_path):
    """Mend what can be mended safely; never touch a finished model.

    Rolls back uncommitted layout, clears the done flags of rows whose data is missing,
    damaged or stale (their stage redoes them), deletes temporary files.
    """
    from ml4ml.store import require_store
    from ml4ml.store.check import repair_store

    require_store(store_path)
    mended, left = repair_store(store_path)
    for problem in mended:
        click.echo(f"mended {problem.where}: {problem.what}")
    for problem in left:
        click.echo(f"left {problem.line()}", err=True)
    if not mended and not left:
        click.echo(f"{store_path}: nothing to mend")
    if left:
        sys.exit(1)
