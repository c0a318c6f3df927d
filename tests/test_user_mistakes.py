"""Every command against every user mistake: one line on stderr, exit 1, no traceback.

Mistakes: a store path that does not exist, an empty folder, a file, a folder or Zarr store
of something else (a foreign Zarr v3 group, a Zarr v2 store, a Zarr array, a group inside
an ml4ml store), a store of another schema version, an unknown suite or transform (the
line names the store's), and a stage run before the one it needs: there the line names
the command to run, and that command, run as printed, works, after which the first one
gets further. Stores are real, on disk; a store that exists is left byte for byte as it was.
"""

import gzip
import io
import json
import re
import shlex
import shutil

import golden
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from tree import digest

from ml4ml.cli import cli

SPEC = """
name = "mistakes"
[store]
path = "db.zarr"
[suites.digits]
n_samples = 16
[transforms.rotation]
grid = [-4, 4, 5]
[zoo]
arch = "cnn5"
epochs = 1
n_train = 32
[[zoo.models]]
mid = "m001"
"""

LEGACY = ("--results", golden.results("small1"), "--act", golden.act("small1"))
MIDS = ["m1", "m2", "m3", "m4", "t1", "t2"]
INVARIANT = {"m1", "m3", "t1"}
LABELS = "mid,label\n" + "".join(f"{m},{int(m in INVARIANT)}\n" for m in MIDS)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line(result, *needles) -> str:
    """The one error line of a refused command, checked; returned."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == "", result.stdout
    line = lines[0]
    assert "Traceback" not in result.output and "None" not in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Stores at every stage: trained (with its spec), probed, measured, labelled."""
    base = tmp_path_factory.mktemp("stages")
    trained = base / "trained"
    trained.mkdir()
    (trained / "spec.toml").write_text(SPEC)
    assert run("train", trained / "spec.toml", "-q").exit_code == 0
    probed = base / "probed.zarr"
    results = np.load(io.BytesIO(gzip.open(golden.results("small1")).read()))
    params = results[:, 0, 4]
    for k, mid in enumerate(MIDS):
        mine = results.copy()
        if mid not in INVARIANT:  # less sure away from the identity
            mine[..., 3] *= (1 - 0.02 * np.abs(params) * (1 + 0.1 * k))[:, None]
        np.save(base / f"{mid}_results.npy", mine)
        result = run("import-legacy", probed, "--mid", mid, "--results",
                     base / f"{mid}_results.npy", "--act", golden.act("small1"))
        assert result.exit_code == 0, result.output
    measured = base / "measured.zarr"
    shutil.copytree(probed, measured)
    assert run("measure", measured, "-q").exit_code == 0
    labelled = base / "labelled.zarr"
    shutil.copytree(measured, labelled)
    (base / "labels.csv").write_text(LABELS)
    result = run("label", labelled, "--transform", "rotation", "--from", base / "labels.csv")
    assert result.exit_code == 0, result.output
    return {"trained": trained, "probed": probed, "measured": measured,
            "labelled": labelled}


# ----------------------------------------------------------------------------- no store
def _foreign_group(path):
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs["title"] = "someone else's data"
    group.create_array("x", shape=(3,), dtype="f4")


def _zarr_v2(path):
    zarr.open_group(path, mode="w", zarr_format=2).create_array("x", shape=(3,), dtype="f4")


def _newer_schema(path, made):
    shutil.copytree(made["measured"], path)
    root = json.loads((path / "zarr.json").read_text())
    root["attributes"]["ml4ml_schema_version"] = 99
    (path / "zarr.json").write_text(json.dumps(root))


BAD_STORES = {
    "missing": (lambda p, m: None, "no store here: the folder does not exist"),
    "empty folder": (lambda p, m: p.mkdir(), "the folder is empty"),
    "a file": (lambda p, m: p.write_text("not a store"), "is a file, not a store folder"),
    "a folder of other files": (lambda p, m: (p.mkdir(), (p / "notes.txt").write_text("x")),
                                "holds no Zarr store"),
    "a foreign zarr group": (lambda p, m: _foreign_group(p),
                             "field 'ml4ml_schema_version': not an ml4ml store"),
    "a zarr v2 store": (lambda p, m: _zarr_v2(p), "a Zarr v2 store, not an ml4ml store"),
    "a zarr array": (lambda p, m: zarr.create_array(p, shape=(3,), dtype="f4"),
                     "a Zarr array, not an ml4ml store"),
    "another schema version": (_newer_schema, "schema version 99 is newer"),
}

READERS = {
    "measure": ("measure", "{s}", "-q"),
    "features": ("features", "{s}", "--transform", "rotation", "-o", "{o}/f.csv"),
    "label --from": ("label", "{s}", "--transform", "rotation", "--from", "recipe"),
    "label --show": ("label", "{s}", "--transform", "rotation", "--show"),
    "label-ui": ("label-ui", "{s}", "--transform", "rotation", "--rater", "ann", "--port",
                 "0"),
    "assess": ("assess", "{s}", "--transform", "rotation", "-q"),
    "assess --predict": ("assess", "{s}", "m1", "--transform", "rotation", "--predict"),
    "report": ("report", "{s}", "-o", "{o}/report", "-q"),
    "plot": ("plot", "{s}", "--mid", "m1", "-o", "{o}/m1.png"),
    "store check": ("store", "check", "{s}"),
    "store repair": ("store", "repair", "{s}"),
    "import-legacy": ("import-legacy", "{s}", "--mid", "m9", *LEGACY),
}


def _args(template, store, out):
    return [str(a).replace("{s}", str(store)).replace("{o}", str(out)) for a in template]


@pytest.mark.parametrize("bad", list(BAD_STORES))
@pytest.mark.parametrize("command", list(READERS))
def test_every_command_refuses_what_is_not_a_store_in_one_line(made, tmp_path, command, bad):
    make, needle = BAD_STORES[bad]
    if command == "import-legacy" and bad in ("missing", "empty folder"):
        pytest.skip("import-legacy makes a store there")
    path = tmp_path / "db.zarr"
    make(path, made)
    before = digest(path)
    out = tmp_path / "out"
    out.mkdir()
    if command == "import-legacy" and bad != "another schema version" and \
            bad not in ("a file",):
        needle = "exists and is not an ml4ml store"
    one_line(run(*_args(READERS[command], path, out)), str(path), needle)
    assert digest(path) == before and list(out.iterdir()) == []


@pytest.mark.parametrize("command", [c for c in READERS if c != "import-legacy"])
def test_a_group_inside_a_store_is_named_as_such(made, tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    inner = made["measured"] / "probes"
    before = digest(made["measured"])
    one_line(run(*_args(READERS[command], inner, out)),
             f"a group inside the ml4ml store '{made['measured']}'",
             f"give the store's own folder, '{made['measured']}'")
    one_line(run(*_args(READERS[command], made["measured"] / "nothing", out)),
             f"no such group in the ml4ml store '{made['measured']}'")
    assert digest(made["measured"]) == before


@pytest.mark.parametrize("command", ["validate", "train", "probe", "run"])
def test_every_spec_command_refuses_a_missing_spec_a_folder_and_a_foreign_store(tmp_path,
                                                                                  command):
    one_line(run(command, tmp_path / "nope.toml"), "nope.toml: no such pipeline spec file")
    (tmp_path / "folder").mkdir()
    one_line(run(command, tmp_path / "folder"), "folder: is a folder, not a pipeline spec")
    if command == "validate":
        return
    (tmp_path / "spec.toml").write_text(SPEC)
    _foreign_group(tmp_path / "db.zarr")
    before = digest(tmp_path / "db.zarr")
    one_line(run(command, tmp_path / "spec.toml", "-q"), "not an ml4ml store")
    assert digest(tmp_path / "db.zarr") == before


# ----------------------------------------------------------------------------- names
UNKNOWN = {
    "measure --suite": (("measure", "{s}", "--suite", "nope"), "--suite"),
    "measure --transform": (("measure", "{s}", "--transform", "rotate"), "--transform"),
    "features --transform": (("features", "{s}", "--transform", "rotate", "-o", "{o}/f.csv"),
                             "--transform"),
    "features --suite": (("features", "{s}", "--transform", "rotation", "--suite", "nope",
                          "-o", "{o}/f.csv"), "--suite"),
    "label --show": (("label", "{s}", "--transform", "rotate", "--show"), "--transform"),
    "label --from": (("label", "{s}", "--transform", "rotate", "--from", "recipe"),
                     "--transform"),
    "label --agreement": (("label", "{s}", "--transform", "rotate", "--agreement"),
                          "--transform"),
    "label-ui": (("label-ui", "{s}", "--transform", "rotate", "--rater", "ann", "--port",
                  "0"), "--transform"),
    "label-ui --suite": (("label-ui", "{s}", "--transform", "rotation", "--suite", "nope",
                          "--rater", "ann", "--port", "0"), "--suite"),
    "assess --transform": (("assess", "{s}", "--transform", "rotate"), "--transform"),
    "assess --suite": (("assess", "{s}", "--transform", "rotation", "--suite", "nope"),
                       "--suite"),
    "assess --predict": (("assess", "{s}", "m1", "--transform", "rotate", "--predict"),
                         "--transform"),
    "report --transform": (("report", "{s}", "--transform", "rotate", "-o", "{o}/r"),
                           "--transform"),
    "report --suite": (("report", "{s}", "--suite", "nope", "-o", "{o}/r"), "--suite"),
    "plot --transform": (("plot", "{s}", "--mid", "m1", "--transform", "rotate", "-o",
                          "{o}/m1.png"), "--transform"),
}


@pytest.mark.parametrize("case", list(UNKNOWN))
def test_an_unknown_suite_or_transform_lists_the_stores(made, tmp_path, case):
    template, field = UNKNOWN[case]
    path = made["labelled"]
    before = digest(path)
    expected = ("unknown transform 'rotate'; the store has: rotation" if field == "--transform"
                else "unknown suite 'nope'; the store has: legacy")
    one_line(run(*_args(template, path, tmp_path)), f"field '{field}'", expected)
    assert digest(path) == before and sorted(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- stage order
ORDER = {
    # case: (store at, command, the advice it must give)
    "measure before probe": ("trained", ("measure", "{s}"), "ml4ml probe {spec}"),
    "label before probe": ("trained", ("label", "{s}", "--transform", "rotation", "--from",
                                       "recipe"), "ml4ml probe {spec}"),
    "probe before train": ("nothing", ("probe", "{spec}", "-q"), "ml4ml train {spec}"),
    "features before measure": ("probed", ("features", "{s}", "--transform", "rotation",
                                           "-o", "{o}/f.csv"), "ml4ml measure {s}"),
    "report before measure": ("probed", ("report", "{s}", "-o", "{o}/r", "-q"),
                              "ml4ml measure {s}"),
    "plot before measure": ("probed", ("plot", "{s}", "--mid", "m1", "-o", "{o}/m1.png"),
                            "ml4ml measure {s}"),
    "label-ui before measure": ("probed", ("label-ui", "{s}", "--transform", "rotation",
                                           "--rater", "ann", "--port", "0"),
                                "ml4ml measure {s}"),
    "assess before measure": ("probed", ("assess", "{s}", "--transform", "rotation", "-q"),
                              "ml4ml measure {s}"),
    "assess before label": ("measured", ("assess", "{s}", "--transform", "rotation", "-q"),
                            "ml4ml label {s} --transform rotation --from recipe"),
    "predict before assess": ("labelled", ("assess", "{s}", "m1", "--transform", "rotation",
                                           "--predict"),
                              "ml4ml assess {s} --transform rotation"),
}


@pytest.mark.parametrize("case", list(ORDER))
def test_a_stage_run_too_early_names_the_command_to_run_and_that_command_works(made, tmp_path,
                                                                            case):
    at, template, advice = ORDER[case]
    folder = tmp_path / "work"
    if at in ("trained", "nothing"):
        shutil.copytree(made["trained"], folder)
        store = folder / "db.zarr"
        if at == "nothing":
            shutil.rmtree(store)
    else:
        folder.mkdir()
        store = folder / "db.zarr"
        shutil.copytree(made[at], store)
    spec = folder / "spec.toml"
    out = tmp_path / "out"
    out.mkdir()

    def fill(text):
        return (text.replace("{s}", str(store)).replace("{o}", str(out))
                .replace("{spec}", str(spec)))

    args = [fill(a) for a in template]
    line = one_line(run(*args), fill(advice))
    # the advice, as printed (the store records the spec that created it), works ...
    command = re.search(r"'(ml4ml [^']*)'", line)[1]
    assert "PIPELINE" not in command
    words = shlex.split(command)
    done = run(*words[1:])
    assert done.exit_code == 0, (command, done.output)
    if template[0] == "label-ui":
        return  # it would now serve the page
    # ... and then the first command gets further: it runs, or stops at a later stage
    again = run(*args)
    assert again.exit_code == 0 or again.stderr.strip() != line, again.output
    assert "Traceback" not in again.output and again.exit_code != 2


def test_the_advice_names_the_recorded_spec_only_while_it_names_this_store(made, tmp_path):
    """A store moved away from its spec (whose [store] path now names another folder) gets
    the PIPELINE placeholder, never a command that would probe a different store."""
    from ml4ml.store import store_attrs
    from ml4ml.store.require import pipeline_command

    store = made["trained"] / "db.zarr"
    attrs = store_attrs(store)
    assert attrs["pipeline"] == "../spec.toml"  # relative to the store's folder
    spec = made["trained"] / "spec.toml"
    assert pipeline_command(attrs, "probe", store) == f"ml4ml probe {spec}"
    moved = tmp_path / "elsewhere.zarr"
    shutil.copytree(store, moved)
    assert pipeline_command(store_attrs(moved), "probe", moved) == "ml4ml probe PIPELINE"
    line = one_line(run("measure", moved), "ml4ml probe PIPELINE")
    assert "PIPELINE being the spec that trained them" in line
