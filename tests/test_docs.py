"""The documentation: every code block of README.md and docs/ runs in a test (or is output),
the blocks no other test runs, and the generated references (command line, spec, Python).

How a block names its test: ``tests/docblocks.py``. The site itself is built by .ci/run
(``mkdocs build --strict``)."""

import ast
import gzip
import importlib
import importlib.util
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

import docblocks
import golden
from ml4ml.cli import cli

ROOT = docblocks.ROOT
HOOKS = ROOT / "docs" / "hooks.py"


def hooks():
    """docs/hooks.py, the generators of the reference pages, as a module."""
    spec = importlib.util.spec_from_file_location("ml4ml_docs_hooks", HOOKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ci_commands() -> list[list[str]]:
    """The commands .ci/run runs, as words (pip's ``--quiet`` left out)."""
    commands = []
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            commands.append([w for w in shlex.split(line, comments=True) if w != "--quiet"])
    return commands


def invoke(words, **kwargs):
    """``ml4ml ...`` in process; the words as a user types them."""
    assert words[0] == "ml4ml", words
    return CliRunner().invoke(cli, words[1:], **kwargs)


# --- every block is covered --------------------------------------------------------------------

def _test_functions(file: str) -> dict[str, ast.FunctionDef]:
    tree = ast.parse((ROOT / "tests" / file).read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_code_block_runs_in_a_test_or_is_text():
    """Each fenced block of README.md and docs/**/*.md is output (```text) or names, just
    above it, a test that exists and reads its blocks by that very name."""
    problems = []
    blocks = docblocks.every_block()
    assert len(blocks) >= 30 and {b.path for b in blocks} >= {"README.md", "docs/store.md"}
    for block in blocks:
        if block.lang in docblocks.OUTPUT:
            if block.test:
                problems.append(f"{block.where()}: a text block is output, not run by a test")
            continue
        if block.lang not in docblocks.RUN:
            problems.append(f"{block.where()}: fence ```{block.lang}: write ```text for "
                            f"output, or one of {sorted(docblocks.RUN)} and name its test")
            continue
        if block.test is None:
            problems.append(f"{block.where()}: no <!-- test: FILE::NAME --> line above it")
            continue
        file, name = block.test.split("::")
        if not (ROOT / "tests" / file).is_file():
            problems.append(f"{block.where()}: names tests/{file}, which does not exist")
            continue
        function = _test_functions(file).get(name)
        if function is None:
            problems.append(f"{block.where()}: tests/{file} has no {name}")
            continue
        strings = {node.value for node in ast.walk(function)
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        if block.test not in strings:
            problems.append(f"{block.where()}: {block.test} does not read its blocks with "
                            f"docblocks.marked({block.test!r})")
    assert not problems, "\n".join(problems)


def test_a_block_without_a_test_or_of_no_language_is_found(tmp_path, monkeypatch):
    """The check above can fail: a page with an unmarked block and a bare fence."""
    page = tmp_path / "docs" / "x.md"
    page.parent.mkdir()
    page.write_text("# x\n\n```python\nprint(1)\n```\n\n```\nout\n```\n\n"
                    "<!-- test: test_docs.py::test_nothing -->\n```bash\nls\n```\n")
    (tmp_path / "README.md").write_text("")
    monkeypatch.setattr(docblocks, "ROOT", tmp_path)
    found = docblocks.every_block()
    assert [(b.lang, b.test, b.line) for b in found] == [
        ("python", None, 3), ("", None, 7), ("bash", "test_docs.py::test_nothing", 12)]
    with pytest.raises(AssertionError, match="no documentation block names"):
        docblocks.marked("test_docs.py::test_other")


def test_the_ci_script_runs_these_lines():
    """Blocks that are CI's own commands (the tests, the site's build): .ci/run runs each
    line as written."""
    blocks = docblocks.marked("test_docs.py::test_the_ci_script_runs_these_lines")
    lines = [line for block in blocks for line in docblocks.command_lines(block)]
    assert "python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder" in lines and "mkdocs build --strict" in lines
    commands = ci_commands()
    for line in lines:
        assert docblocks.argv(line) in commands, line


# --- blocks that no stage test runs -----------------------------------------------------------

def test_the_spec_example_validates(tmp_path):
    """docs/reference/spec.md's annotated spec: ``ml4ml validate`` accepts it as written,
    and so does the spec's JSON Schema."""
    import jsonschema

    from ml4ml import config

    (block,) = docblocks.marked("test_docs.py::test_the_spec_example_validates")
    (tmp_path / "pipelines").mkdir()
    spec = tmp_path / "pipelines" / "example.toml"
    spec.write_text(block.code)
    result = invoke(["ml4ml", "validate", str(spec)])
    assert result.exit_code == 0, result.output
    assert f"{spec}: ok:" in result.output
    # the models of [[zoo.grids]] (3 x 2 x 2), [zoo.sample] (150) and [[zoo.models]] (1)
    assert "163 models" in result.output, result.output
    schema = getattr(config, "spec_json_schema", None)
    assert schema is not None, "ml4ml.config.spec_json_schema() is missing (issue 26.3)"
    jsonschema.validate(tomllib.loads(block.code), schema())


def test_the_paper_commands_parse_and_their_specs_validate():
    """docs/train.md's paper runs need CIFAR-10 and MNIST (and a GPU or a cluster): the
    command lines parse as ``ml4ml run`` takes them, and the specs they name validate."""
    blocks = docblocks.marked("test_docs.py::test_the_paper_commands_parse_and_their_specs_validate")
    lines = [line for block in blocks for line in docblocks.command_lines(block)]
    assert len(lines) == 2
    for line in lines:
        words = docblocks.argv(line)
        assert words[:2] == ["ml4ml", "run"], line
        with cli.make_context("ml4ml", words[1:2]) as group:
            command = cli.get_command(group, words[1])
            context = command.make_context(words[1], words[2:], parent=group)
            assert context.params["pipeline"] == words[2]
        result = invoke(["ml4ml", "validate", str(ROOT / words[2])])
        assert result.exit_code == 0 and ": ok: 150 models" in result.output, result.output


def test_the_reference_files_example_runs(tmp_path, monkeypatch):
    """docs/own-models.md, "The reference's files": the reference's .npy files of one model
    (a golden case), imported, measured, featured and labelled, as written."""
    (block,) = docblocks.marked("test_docs.py::test_the_reference_files_example_runs")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "test_results1515.npy").write_bytes(gzip.open(golden.results("small1")).read())
    (tmp_path / "test_actoverall1515.npy").write_bytes(gzip.open(golden.act("small1")).read())
    (tmp_path / "mlabel.txt").write_text("mid rotation brightness scaling\nm001 1 0 0\n")
    lines = docblocks.command_lines(block)
    assert [docblocks.argv(line)[1] for line in lines] == ["import-legacy", "measure",
                                                           "features", "label"]
    outputs = []
    for line in lines:
        result = invoke(docblocks.argv(line))
        assert result.exit_code == 0, (line, result.output)
        outputs.append(result.output)
    store = tmp_path / "stores" / "ref.zarr"
    probes = xr.open_zarr(store, group="probes/legacy/rotation")
    results = np.load(tmp_path / "test_results1515.npy")
    assert probes.sizes["aug_param"] == results.shape[0] == 31
    assert "measured 1 model(s)" in outputs[1]
    features = (tmp_path / "features.csv").read_text().splitlines()
    assert features[1].startswith("m001,") and len(features[0].split(",")) == 81
    labels = xr.open_zarr(store, group="labels/rotation")["label"].load()
    assert labels.sel(mid="m001", source="file").item() == 1


def test_the_labelling_examples_run_on_a_copy_of_the_demo_store(demo_run, tmp_path):
    """docs/labelling.md: ``label-ui`` prints one private URL per rater as shown; two raters
    label the shared overlap through the page's API (as their recipes say), Ctrl-C stops
    it; then the agreement and the learning curve, as written."""
    from ml4ml.labelling.access import Access
    from test_label_ui import bearer, fetch

    store = tmp_path / "stores" / "demo-digits.zarr"
    shutil.copytree(demo_run[0] / "demo.zarr", store)
    serve, curve = docblocks.marked(
        "test_docs.py::test_the_labelling_examples_run_on_a_copy_of_the_demo_store")
    label_ui, agreement = docblocks.command_lines(serve)
    shown = [line[2:] for line in serve.code.splitlines() if line.startswith("# ")]
    words = docblocks.argv(label_ui)
    assert words[:2] == ["ml4ml", "label-ui"] and words[words.index("--overlap") + 1] == "20"
    process = subprocess.Popen([sys.executable, "-m", *words, "--port", "0"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = [process.stdout.readline().rstrip("\n") for _ in shown]
        for doc, line in zip(shown, printed):  # as shown, but this machine's path and tokens
            pattern = re.escape(doc).replace(re.escape("/home/me/stores"),
                                             re.escape(str(tmp_path / "stores")))
            pattern = re.sub(r"token=\w+", r"token=[\\w-]+", pattern).replace("8765", r"\d+")
            assert re.fullmatch(pattern, line), (doc, line)
        urls = dict(line.strip().split(": ", 1) for line in printed[1:])
        models = xr.open_zarr(store, group="models")
        recipe = xr.open_zarr(store, group="labels/rotation")["label"].sel(source="recipe").load()
        mids = models["mid"].values.tolist()
        for rater, url in urls.items():
            base, token = url.split("/?token=")
            alias_of = Access.open(str(store), [rater]).aliases(rater, mids)
            mid_of = {alias: mid for mid, alias in alias_of.items()}
            for _ in range(20):
                status, answer = fetch(f"{base}/api/next", headers=bearer(token))
                assert status == 200, answer
                label = int(recipe.sel(mid=mid_of[answer["alias"]]))
                status, saved = fetch(
                    f"{base}/api/labels",
                    f'{{"alias": "{answer["alias"]}", "label": {label}}}'.encode(),
                    {"Content-Type": "application/json", "Origin": base, **bearer(token)})
                assert status == 200 and saved["ok"], saved
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        process.wait(30)
    result = invoke(docblocks.argv(agreement.replace("stores/", f"{tmp_path}/stores/")))
    assert result.exit_code == 0, result.output
    assert "overlap of ann and bob: 20 model(s) both labelled (20 of them in the shared " \
        "overlap" in result.output, result.output
    assert "Cohen's kappa ann / bob: 1.000 on the 20 model(s) both labelled" in result.output
    (line,) = docblocks.command_lines(curve)
    result = invoke(docblocks.argv(line.replace("stores/", f"{tmp_path}/stores/")
                                   .replace("curve.png", f"{tmp_path}/curve.png")))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("rotation, rater ann: 20 label(s)"), result.output
    assert re.search(r"^\s+20\s+\d+\s+\S+", result.output, flags=re.M), result.output
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the generated references ---------------------------------------------------------------

def _walk(group, name="ml4ml"):
    yield name, group
    for sub, command in getattr(group, "commands", {}).items():
        yield from _walk(command, f"{name} {sub}")


def test_the_cli_reference_has_every_command_with_every_option():
    text = hooks().cli_reference()
    sections = re.split(r"^#{3,4} ", text, flags=re.M)[1:]
    by_name = {section.split("\n", 1)[0].strip("`"): section for section in sections}
    commands = dict(_walk(cli))
    assert set(by_name) == set(commands) and len(commands) >= 18
    for name, command in commands.items():
        assert f"Usage: {name} " in by_name[name], name
        for param in command.params:
            for flag in param.opts if param.param_type_name == "option" else ():
                assert flag in by_name[name], (name, flag)


def test_the_python_reference_names_every_export_where_it_is_defined():
    module = hooks()
    api = dict(module.public_api())
    assert list(api) == module.PUBLIC
    for package, identifiers in api.items():
        exported = [n for n in importlib.import_module(package).__all__ if not n.startswith("__")]
        assert [i.rsplit(".", 1)[1] for i in identifiers] == exported, package
        for identifier in identifiers:
            home, name = identifier.rsplit(".", 1)
            assert hasattr(importlib.import_module(home), name), identifier
    assert "ml4ml.probe.responses.probe_model" in api["ml4ml"] or \
        any(i.endswith(".probe_model") for i in api["ml4ml"])
    assert "::: ml4ml.assess" in module.python_reference()


def _fields(node, schema, seen=None):
    """Every property name of a JSON Schema, through $ref, anyOf, items and
    additionalProperties."""
    seen = set() if seen is None else seen
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            if ref in seen:
                return set()
            seen.add(ref)
            target = schema
            for part in ref[2:].split("/"):
                target = target[part]
            return _fields(target, schema, seen)
        names = set(node.get("properties", {}))
        for value in node.values():
            names |= _fields(value, schema, seen)
        return names
    if isinstance(node, list):
        return set().union(*(_fields(v, schema, seen) for v in node)) if node else set()
    return set()


def test_the_spec_reference_lists_every_field_of_the_schema():
    module = hooks()
    schema = module.spec_schema()  # fails loudly without ml4ml.config.spec_json_schema
    text = module.spec_reference(schema)
    for field in _fields(schema, schema):
        assert f"| `{field}` |" in text, field
    for table in ("`[store]`", "`[suites.<name>]`", "`[transforms.<name>]`", "`[zoo]`",
                  "`[[zoo.models]]`", "`[probe]`", "`[assess]`"):
        assert table in text, table


def test_the_spec_reference_renders_a_schema_of_its_own():
    """The renderer on a schema written here: nested, keyed and listed tables, refs,
    alternatives, enums, defaults and bounds."""
    schema = {
        "type": "object", "description": "A spec.", "required": ["store"],
        "properties": {
            "store": {"$ref": "#/$defs/Store"},
            "suites": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Suite"}},
            "models": {"type": "array", "items": {"$ref": "#/$defs/Model"}, "default": []}},
        "$defs": {
            "Store": {"type": "object", "required": ["path"], "properties": {
                "path": {"type": "string", "description": "a folder | URL"},
                "precision": {"enum": ["float32", "float64"], "default": "float32"}}},
            "Suite": {"type": "object", "properties": {
                "n_samples": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
                              "default": None}}},
            "Model": {"type": "object", "properties": {"mid": {"type": "string"}}}}}
    text = hooks().spec_reference(schema)
    assert "### Top level\n\nA spec." in text
    assert "| `store` | table (below) | required |  |" in text
    assert "| `path` | string | required | a folder \\| URL |" in text
    assert '| `precision` | "float32" \\| "float64" | "float32" |  |' in text
    assert "### `[suites.<name>]`" in text
    assert "| `n_samples` | integer (or none) | null | >= `1` |" in text
    assert "### `[[models]]`" in text and "| `mid` | string |  |  |" in text


def test_the_spec_reference_fails_loudly_without_the_schema(monkeypatch):
    from ml4ml import config

    monkeypatch.delattr(config, "spec_json_schema", raising=False)
    with pytest.raises(RuntimeError, match=r"spec_json_schema\(\) is missing"):
        hooks().spec_schema()
