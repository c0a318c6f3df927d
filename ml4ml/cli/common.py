"""What every ``ml4ml`` command shares: options, user errors, output files, plugins."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path

import click

from ml4ml.errors import InputError, ML4MLError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
INTERRUPTED = 130


def user_errors(func):
    """ML4MLError -> one clear line on stderr, exit 1; Ctrl-C -> one line, exit 130.

    Neither prints a traceback. The stores are consistent after either (every write is
    atomic and committed in order), so the same command resumes.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ML4MLError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: the store is consistent; run the same command again "
                       "to resume", err=True)
            sys.exit(INTERRUPTED)

    return wrapper


def cluster_options(func):
    func = click.option("--log", "log", metavar="FILE", type=click.Path(dir_okay=False),
                        help="Append dask's messages (the workers' too), warnings and the "
                             "traceback of each failed model to FILE (default: STORE.log "
                             "beside the store).")(func)
    func = click.option("--scheduler", metavar="ADDRESS",
                        help="Run on an existing dask cluster, e.g. tcp://127.0.0.1:8786.")(func)
    func = click.option("--workers", type=click.IntRange(min=1), metavar="N",
                        help="Start a local dask cluster of N worker processes.")(func)
    return func


def stage_log(store, log=None):
    """The log of a stage command (``ml4ml.logs.log_to``): ``--log FILE``, else beside
    ``store``. The terminal then shows ml4ml's lines only."""
    from ml4ml.logs import log_to

    return log_to(output_file(log, "--log") if log else beside_store(store, ".log"))


def pipeline_cluster(pipeline, workers, scheduler):
    """The dask client of a pipeline command: --workers/--scheduler, else the spec's
    ``[cluster] workers``, else in process."""
    from ml4ml.cluster import dask_client

    if workers is None and scheduler is None:
        workers = pipeline.workers
    return dask_client(workers, scheduler)


def device_option(func):
    return click.option("--device", default=None, metavar="DEVICE",
                        help="cpu, cuda or cuda:N (default: the spec's [probe] device).")(func)


def quiet_option(func):
    return click.option("-q", "--quiet", is_flag=True,
                        help="No progress (bars on a terminal, lines in a log).")(func)


def output_file(path, option: str = "-o") -> Path:
    """``path`` as a file to write; InputError naming it when its folder does not exist."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"folder {str(folder)!r} does not exist", file=path, field=option,
                         hint="create it first, or write somewhere else")
    return path


def import_plugin(plugin: str):
    """Import a module name or a .py file (it may register measures)."""
    try:
        if plugin.endswith(".py"):
            if not Path(plugin).is_file():
                raise ImportError("no such file")
            spec = importlib.util.spec_from_file_location(Path(plugin).stem, plugin)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {plugin}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(plugin)
    except (ImportError, OSError, SyntaxError) as exc:
        raise ML4MLError(f"cannot import plugin: {exc}", file=plugin, field="--plugin") from exc


def refused(file, failed: dict, what: str, log=None) -> None:
    """After a stage finished the rest: exit 1 with one line saying how many models failed
    and what to do. The stage's summary line has named each one, with its reason, once.

    failed : {mid: reason}; log : the command's log file (the tracebacks).
    """
    if not failed:
        return
    details = f"; their reasons and tracebacks are in {log}" if log else ""
    raise ML4MLError(f"{len(failed)} model(s) failed in {what}; the others are done",
                     file=file, field="models",
                     hint=f"fix them and rerun the same command: it retries only the failed "
                          f"one(s){details}")


def beside_store(store_path, suffix: str) -> Path:
    """A local output named after the store: ``STORE<suffix>`` beside a local store; for an
    object store (``s3://bucket/db.zarr``), ``db.zarr<suffix>`` in the current folder."""
    if "://" in str(store_path):
        return Path.cwd() / f"{Path(str(store_path).rstrip('/')).name}{suffix}"
    return Path(str(store_path).rstrip("/") + suffix)


def write_judgements(store_path, transform: str, suite=None):
    """Write every model's judgement (``ml4ml.assess.judgements``) to
    ``STORE.<transform>.judgements.csv`` (whole or not at all); (path, table)."""
    import os

    from ml4ml.assess.judgements import judgements

    table = judgements(store_path, transform, suite=suite)
    path = beside_store(store_path, f".{transform}.judgements.csv")
    partial = path.with_name(f".{path.name}.partial")
    table.to_csv(partial, index=False)
    os.replace(partial, path)
    return path, table


def answer_lines(table, path) -> list[str]:
    """The summary's answer: how many models are judged variant, by which assessor, how,
    and where the list is (``table``: ``judgements``' table; ``path``: its CSV)."""
    from ml4ml.assess.judgements import answer_counts, how_judged

    n = answer_counts(table)
    chosen, repeats = table.attrs["assessor"], table.attrs["repeats"]
    parts = how_judged(n, chosen, repeats)
    lines = [f"variant:  {n['variant']} of {n['judged']} models judged not invariant by "
             f"{chosen}: {', '.join(parts)}; {n['disagree']} disagree with their label"]
    labelled = table[table["judged_by"] == "out_of_fold"]
    otherwise = int((labelled["refit_prediction"] != labelled["oof_prediction"]).sum())
    lines.append(f"          the refit {chosen} (fit on every label, so in-sample) labels "
                 f"{otherwise} of those {n['labelled']} labelled models otherwise")
    lines.append(f"judgements: {path}  (every model: label, out-of-fold prediction and "
                 f"probability, refit score, source, clean accuracy)")
    return lines
