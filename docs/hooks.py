"""MkDocs hooks: the pages generated from the code, never written by hand.

A page asks for a generated part with a marker line, replaced at build time:

    <!-- generated: cli -->      every ``ml4ml`` command and its --help (from click)
    <!-- generated: spec -->     the pipeline spec's fields (from its JSON Schema)
    <!-- generated: python -->   the public Python API (mkdocstrings, from the docstrings)

The functions are plain (no MkDocs object needed), so tests call them directly.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import click

MARKER = re.compile(r"^<!-- generated: (\w+) -->$", flags=re.M)
# the packages whose exports form the public Python API, in the order of the spine
PUBLIC = ["ml4ml", "ml4ml.store", "ml4ml.data", "ml4ml.zoo", "ml4ml.probe", "ml4ml.measure",
          "ml4ml.assess", "ml4ml.report", "ml4ml.labelling"]


# --- the command line ------------------------------------------------------------------------

def cli_commands(group: click.Group | None = None, name: str = "ml4ml",
                 parent: click.Context | None = None):
    """Every command under ``group`` (default ``ml4ml.cli.cli``), depth first, in the order
    of its --help: ``[(full name, command, context)]``."""
    if group is None:
        from ml4ml.cli import cli as group
    context = click.Context(group, info_name=name.rsplit(" ", 1)[-1], parent=parent,
                            terminal_width=100, max_content_width=100)
    found = [(name, group, context)]
    for sub in group.list_commands(context):
        command = group.get_command(context, sub)
        if isinstance(command, click.Group):
            found += cli_commands(command, f"{name} {sub}", context)
        else:
            found.append((f"{name} {sub}", command,
                          click.Context(command, info_name=sub, parent=context,
                                        terminal_width=100, max_content_width=100)))
    return found


def cli_reference() -> str:
    """Markdown: one section per command with its --help text, as ``ml4ml CMD --help``
    prints it (100 columns)."""
    parts = []
    for name, command, context in cli_commands():
        level = "###" if name.count(" ") <= 1 else "####"
        summary = command.get_short_help_str(limit=100)
        parts.append(f"{level} `{name}`\n\n{summary}\n\n```text\n"
                     f"{command.get_help(context).rstrip()}\n```\n")
    return "\n".join(parts)


# --- the pipeline spec ---------------------------------------------------------------------

def spec_schema() -> dict:
    """The spec's JSON Schema from ``ml4ml.config.spec_json_schema()``; fails loudly if the
    function is missing (the reference is never written by hand)."""
    config = importlib.import_module("ml4ml.config")
    function = getattr(config, "spec_json_schema", None)
    if function is None:
        raise RuntimeError("docs: ml4ml.config.spec_json_schema() is missing; the spec "
                           "reference is generated from it (issue 26.3)")
    schema = function()
    if not isinstance(schema, dict) or "properties" not in schema:
        raise RuntimeError("docs: ml4ml.config.spec_json_schema() did not return a JSON "
                           "Schema object with 'properties'")
    return schema


def _resolve(node: dict, schema: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise RuntimeError(f"docs: the spec schema has an external $ref {ref!r}")
        target = schema
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _type(node: dict, schema: dict) -> str:
    """A short type for a table cell: ``integer``, ``string: a | b``, ``list of number``,
    ``table NAME``..."""
    node = _resolve(node, schema)
    if node.get("properties"):
        return "table (below)"
    for key in ("anyOf", "oneOf"):
        if key in node:
            kinds = [_type(n, schema) for n in node[key]]
            return " or ".join(k for k in dict.fromkeys(kinds) if k != "null") + \
                (" (or none)" if "null" in kinds else "")
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        return " | ".join(json.dumps(v) for v in node["enum"])
    kind = node.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        if "prefixItems" in node:
            return "[" + ", ".join(_type(n, schema) for n in node["prefixItems"]) + "]"
        return "list of " + _type(node.get("items", {}), schema)
    if kind == "object":
        extra = node.get("additionalProperties") or \
            next(iter(node.get("patternProperties", {}).values()), None)
        if isinstance(extra, dict):
            return "tables by name, each " + _type(extra, schema)
        return "table"
    return kind


def _bounds(node: dict) -> str:
    """The field's limits (of the value, or of its non-null alternative)."""
    for key in ("anyOf", "oneOf"):
        for option in node.get(key, []):
            if option.get("type") != "null" and _bounds(option):
                return _bounds(option)
    words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<",
             "minLength": "length >=", "minItems": "items >=", "maxItems": "items <=",
             "pattern": "matches"}
    return ", ".join(f"{w} `{node[k]}`" for k, w in words.items() if k in node)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _tables(node: dict, schema: dict, title: str, out: list, seen: dict | None = None):
    """One markdown table per object of the schema, nested tables after their parent;
    ``title`` as TOML writes the table: ``[store]``, ``[suites.<name>]``, ``[[zoo.models]]``.
    An object of the same fields as one written before is not written again: its row
    names the table that lists them (``seen``: fields -> title)."""
    seen = {} if seen is None else seen
    node = _resolve(node, schema)
    if title.count(".") > 8:
        raise RuntimeError(f"docs: the spec schema nests too deep (recursive?) at {title}")
    properties = node.get("properties", {})
    required = set(node.get("required", []))
    path = title.strip("[]")
    rows, nested = [], []
    for name, field in properties.items():
        resolved = _resolve(field, schema)
        default = json.dumps(resolved["default"]) if "default" in resolved else \
            ("required" if name in required else "")
        meaning = "; ".join(part for part in (resolved.get("description", ""),
                                              _bounds(resolved)) if part)
        child = f"{path}.{name}" if path else name
        for candidate, many, keyed in _objects(resolved, schema):
            child_path = child + (".<name>" if keyed else "")
            fields = tuple(sorted(candidate["properties"]))
            if fields in seen:
                meaning += f" (the fields of `{seen[fields]}`)"
                continue
            title_of = f"[[{child_path}]]" if many else f"[{child_path}]"
            if title_of in seen.values():  # another shape of the same table
                title_of += ", or"
            seen[fields] = title_of
            nested.append((candidate, title_of))
        rows.append(f"| `{name}` | {_cell(_type(field, schema))} | {_cell(default)} | "
                    f"{_cell(meaning)} |")
    heading = (f"`{title.removesuffix(', or')}`, or" if title.endswith(", or") else
               f"`{title}`") if title else "Top level"
    out.append(f"### {heading}\n\n{node.get('description', '')}\n\n"
               "| field | type | default | meaning |\n|---|---|---|---|\n"
               + "\n".join(rows) + "\n")
    for candidate, child_title in nested:
        _tables(candidate, schema, child_title, out, seen)


def _objects(node: dict, schema: dict, many: bool = False, keyed: bool = False):
    """The object schemas a field holds, each with whether it is a list of tables and
    whether it is keyed by a name: itself, its items, its alternatives, its values."""
    node = _resolve(node, schema)
    if node.get("properties"):
        yield node, many, keyed
        return
    for key in ("anyOf", "oneOf"):
        for option in node.get(key, []):
            yield from _objects(option, schema, many, keyed)
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        yield from _objects(node["items"], schema, True, keyed)
    if isinstance(node.get("additionalProperties"), dict):
        yield from _objects(node["additionalProperties"], schema, many, True)
    for value in node.get("patternProperties", {}).values():
        yield from _objects(value, schema, many, True)


def spec_reference(schema: dict | None = None) -> str:
    """Markdown: every table of the spec and its fields (type, default, meaning), from the
    JSON Schema."""
    schema = spec_schema() if schema is None else schema
    out = []
    _tables(schema, schema, "", out)
    return "\n".join(out)


# --- the Python API ------------------------------------------------------------------------

def public_api() -> list[tuple[str, list[str]]]:
    """``[(package, [identifier of each export's definition])]`` for the packages of
    ``PUBLIC``, following their (lazy) exports to the module that defines each name."""
    api = []
    for package in PUBLIC:
        module = importlib.import_module(package)
        lazy = {}
        for cell in getattr(getattr(module, "__getattr__", None), "__closure__", None) or ():
            if isinstance(cell.cell_contents, dict):
                lazy = cell.cell_contents
        names = []
        for name in getattr(module, "__all__", []):
            if name.startswith("__"):
                continue
            if name in lazy:
                names.append(f"{lazy[name]}.{name}")
                continue
            value = getattr(module, name)
            home = getattr(value, "__module__", None)
            names.append(f"{home}.{name}" if home and home.startswith("ml4ml")
                         and getattr(value, "__name__", name) == name else f"{package}.{name}")
        api.append((package, names))
    return api


def python_reference() -> str:
    """Markdown with a mkdocstrings block per package and per export."""
    parts = []
    for package, names in public_api():
        parts.append(f"## `{package}`\n\n::: {package}\n    options:\n      members: false\n"
                     "      show_root_heading: false\n      show_root_toc_entry: false\n")
        for identifier in names:
            parts.append(f"::: {identifier}\n    options:\n      heading_level: 3\n")
    return "\n".join(parts)


# --- MkDocs hook entry points ----------------------------------------------------------------

GENERATORS = {"cli": cli_reference, "spec": spec_reference, "python": python_reference}


def on_page_markdown(markdown, page, config, files):
    def replace(match):
        kind = match.group(1)
        if kind not in GENERATORS:
            raise RuntimeError(f"docs: {page.file.src_path}: unknown generated part {kind!r}")
        return GENERATORS[kind]()

    return MARKER.sub(replace, markdown)
