"""``ml4ml spec schema``: the pipeline spec's JSON Schema, for editors and CI."""

from __future__ import annotations

import json

import click

from ml4ml.cli.common import CONTEXT, user_errors


@click.group("spec", context_settings=CONTEXT)
def spec_group():
    """The pipeline spec itself: its JSON Schema ('ml4ml validate SPEC' checks a spec)."""


def schema_text() -> str:
    """The JSON Schema of a pipeline spec as ``ml4ml spec schema`` prints it."""
    from ml4ml.config import spec_json_schema

    return json.dumps(spec_json_schema(), indent=2, ensure_ascii=False) + "\n"


@spec_group.command(context_settings=CONTEXT)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write it to this file (e.g. docs/spec.schema.json) instead of stdout.")
@user_errors
def schema(output):
    """Print the JSON Schema of a pipeline spec (TOML).

    \b
    Editors read it from a first line '#:schema ../docs/spec.schema.json' (Taplo, Even
    Better TOML) to complete fields and mark errors; CI can check a spec with any JSON
    Schema validator. Names you register (suites, transforms) are plain strings in it:
    'ml4ml validate SPEC' checks those too.
    """
    text = schema_text()
    if output is None:
        click.echo(text, nl=False)
        return
    with open(output, "w", encoding="utf-8") as file:
        file.write(text)
    click.echo(f"wrote {output}")
