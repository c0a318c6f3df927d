"""Shared fixtures; the report header says which golden cases the parity tests use."""

from pathlib import Path

import pytest

import docblocks

from ml4ml.cluster import torch_threads


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread: fast on small batches, no oversubscription on shared CPUs."""
    with torch_threads(1):
        yield


def pytest_report_header(config):
    import golden

    if golden.large_available():
        return f"golden vectors: 3 small cases (tests/data/golden), 3 large ({golden.LARGE})"
    return (f"golden vectors: 3 small cases (tests/data/golden); the 3 large ones are an extra, "
            f"not at {golden.LARGE}, so not tested")


DEMO = Path(__file__).resolve().parents[1] / "pipelines" / "demo-digits.toml"


def reduced_demo(folder: Path) -> Path:
    """The demo spec with fewer models, epochs, images and repeats; the same design."""
    text = DEMO.read_text()
    text = text.replace('path = "../stores/demo-digits.zarr"', 'path = "demo.zarr"')
    text = text.replace('workers = "auto"', "workers = 1")
    text = text.replace('[suites.digits]\nsplit = "test"', '[suites.digits]\nsplit = "test"\n'
                        "n_samples = 90")
    text = text.replace("epochs = 10", "epochs = 2\nn_train = 240")
    text = text.replace("seed = [0, 1, 2]", "seed = [0]").replace("seed = [4, 5]", "seed = [4]")
    text = text.replace("repeats = 10", "repeats = 3")
    spec = folder / "demo.toml"
    spec.write_text(text)
    return spec


DEMO_TEST = "test_demo_run.py::test_the_reduced_demo_runs_end_to_end_and_names_every_output"


def demo_command(block, spec: Path) -> list[str]:
    """The ``ml4ml run pipelines/demo-digits.toml`` of a setup block (``pip install ... &&
    ml4ml run ...``), on ``spec``, quiet: the words after the shell's ``&&``."""
    (line,) = docblocks.command_lines(block)
    words = docblocks.argv(line.split(" && ", 1)[1])
    assert words[:3] == ["ml4ml", "run", "pipelines/demo-digits.toml"], (block.where(), words)
    return ["ml4ml", "run", str(spec), *words[3:], "-q"]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``ml4ml run`` of the reduced demo, once per session: (folder, spec, click result);
    the store is ``folder / "demo.zarr"``. Tests read it; none may change it."""
    from click.testing import CliRunner

    from ml4ml.cli import cli

    folder = tmp_path_factory.mktemp("demo")
    spec = reduced_demo(folder)
    # the command of the README and of docs/getting-started.md, on the reduced spec
    result = CliRunner().invoke(cli, demo_command(docblocks.marked(DEMO_TEST)[0], spec)[1:])
    assert result.exit_code == 0, result.output
    return folder, spec, result


# The longest test files, collected first: with two workers (``-n 2 --dist loadfile
# --no-loadscope-reorder``, as .ci/run runs them) each worker starts on one of them and the
# short files fill in around them, instead of both ending the run one after the other.
LONGEST_FIRST = ("test_crash_assessed.py", "test_crash.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable
