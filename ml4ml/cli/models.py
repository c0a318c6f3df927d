"""``ml4ml add-models``: register models trained elsewhere in a store, as they are."""

from __future__ import annotations

import click

from ml4ml.cli.common import CONTEXT, user_errors


def _floats(value, option):
    from ml4ml.errors import InputError

    if not value:
        return ()
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise InputError(f"expected numbers separated by commas, e.g. 0.5,0.5,0.5, got "
                         f"{value!r}", field=option) from None


def _layers(layers) -> tuple:
    from ml4ml.errors import InputError

    twice = sorted({name for name in layers if layers.count(name) > 1})
    if twice or any(not name for name in layers):
        raise InputError(f"each --layers name once, none empty; got {list(layers)}",
                         field="--layers")
    return tuple(layers)


@click.command("add-models", context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--arch", default="", metavar="A",
              help="Architecture of state dicts: cnn5, vgg13bn, resnet, torchvision:<name> or "
                   "module:<package.module>:<Class> (imported from the current folder).")
@click.option("--mid", "mids", multiple=True, metavar="ID",
              help="Model id of each FILE in order (default: the file stems).")
@click.option("--holdout", is_flag=True, help="Hold-out models (their ids must start with 't').")
@click.option("--partition", default="", metavar="P", help="The partition they belong to.")
@click.option("--normalize-mean", default="", metavar="M,M,M",
              help="Input mean per channel, subtracted after the transformation.")
@click.option("--normalize-std", default="", metavar="S,S,S",
              help="Input std per channel, divided by after the transformation.")
@click.option("--layers", "layers", multiple=True, metavar="NAME",
              help="A module to record (repeatable, in order; names from "
                   "model.named_modules(), e.g. --layers layer4.1.conv1 --layers "
                   "layer4.1.conv2); as many as every model of the store records (2 by "
                   "default). Default: the spec's [probe] layers, else the model's last "
                   "convolutions (nested, TorchScript and torch.export ones included).")
@click.option("--force", is_flag=True,
              help="Replace models whose file changed (their later results are redone).")
@click.option("--trust", is_flag=True,
              help="The files are yours or vouched for: TorchScript, and .pt2 programs "
                   "calling operators outside the allow-list, are code and are refused "
                   "without it (recorded per model).")
@user_errors
def add_models(store_path, files, arch, mids, holdout, partition, normalize_mean,
               normalize_std, layers, force, trust):
    """Add models trained elsewhere to STORE, as they are (never trained).

    \b
    ml4ml add-models stores/mine.zarr models/*.pt2
    ml4ml add-models stores/mine.zarr net_a.pt net_b.pt --arch module:mynets:Net
    ml4ml add-models stores/mine.zarr old.ts --mid t001 --holdout --trust

    FILE is a state dict (torch.save(model.state_dict()), needs --arch), a torch.export
    program (.pt2) or a TorchScript file (a program: only with --trust). Each is checked
    on the suites STORE records (image shape, class count), and its layers to record
    found, before the store is touched; 'ml4ml probe SPEC' then probes them too ('ml4ml
    remove-models STORE ID' takes one out again).
    """
    import os
    from pathlib import Path

    from ml4ml.errors import InputError
    from ml4ml.zoo.adding import AddedModel, check_mid, register_added, store_suites

    if mids and len(mids) != len(files):
        raise InputError(f"give one --mid per FILE: {len(files)} file(s), {len(mids)} --mid",
                         field="--mid")
    mean, std = _floats(normalize_mean, "--normalize-mean"), _floats(normalize_std,
                                                                     "--normalize-std")
    if len(mean) != len(std):
        raise InputError(f"--normalize-mean has {len(mean)} value(s), --normalize-std "
                         f"{len(std)}: give one per channel each", field="--normalize-std")
    if any(s <= 0 for s in std):
        raise InputError(f"--normalize-std values must be > 0, got {normalize_std}",
                         field="--normalize-std")
    if os.path.exists(store_path) or "://" in store_path:
        from ml4ml.store import require_store

        if os.path.exists(store_path):
            require_store(store_path)
    entries = []
    for k, file in enumerate(files):
        mid = check_mid(mids[k] if mids else Path(file).stem)
        if arch.startswith("module:"):
            from ml4ml.config import _Problems, _check_module_arch

            problems = _Problems(file)
            _check_module_arch(arch, os.getcwd(), "--arch", problems)
            if problems.items:
                raise InputError(problems.items[0].split("'--arch': ", 1)[-1], field="--arch")
        entries.append(AddedModel(
            mid=mid, checkpoint=file if "://" in file else os.path.abspath(file), arch=arch,
            holdout=holdout, partition=partition, normalize_mean=mean, normalize_std=std,
            base=os.getcwd(), layers=_layers(layers), trusted=trust))
    # the hold-out id rule is checked with each file, after it: a bad file says so first
    report = register_added(store_path, entries, suites=store_suites(store_path),
                            force=force)
    replaced = f" ({len(report.replaced)} replaced)" if report.replaced else ""
    click.echo(f"{len(report.added) + len(report.replaced)} added{replaced}, "
               f"{len(report.already)} already; store {store_path}")
    if report.unchecked:
        click.echo(f"note: {report.unchecked}")


@click.command("remove-models", context_settings=CONTEXT)
@click.argument("store_path", metavar="STORE")
@click.argument("mids", nargs=-1, required=True, metavar="MID...")
@click.option("--force", is_flag=True,
              help="Also remove models that carry expert ratings (the ratings go too) or "
                   "that the store's recorded spec lists (its next 'ml4ml run' trains or "
                   "adds them again).")
@user_errors
def remove_models(store_path, mids, force):
    """Remove models, and every result of theirs, from STORE.

    \b
    ml4ml remove-models stores/mine.zarr r18 ts1
    ml4ml remove-models stores/demo-digits.zarr m042 --force

    Every row of each MID goes from every group (models, probes, matrices, measures,
    labels and expert ratings, assessments); the other models' rows stay bit for bit.
    Crash-safe: a killed or interrupted run is finished by the next command that writes
    STORE. Refused while another process writes STORE, for an unknown MID (nothing is
    removed), and, without --force, for models with expert ratings or listed in the
    store's spec. Checkpoint files are deleted only where ml4ml wrote them (a trained
    model's <checkpoints>/<mid>.pt, a model add_models saved from memory); files you
    added stay. An assessment made with a removed labelled model is to be redone.
    """
    from ml4ml.zoo.removing import remove_models as remove

    report = remove(store_path, mids, force=force)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{report.summary()}; store {store_path}")
    for transform in report.stale_assessments:
        click.echo(f"the assessment of {transform!r} used removed labelled models: run "
                   f"'ml4ml assess {store_path} --transform {transform}' to redo it")
