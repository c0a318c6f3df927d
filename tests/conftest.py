"""Shared fixtures; the report header says which golden cases the parity tests use."""

from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """``ml4ml run`` of the reduced demo, once per session: (folder, spec, click result);
    the store is ``folder / "demo.zarr"``. Tests read it; none may change it."""
    from click.testing import CliRunner

    from ml4ml.cli import cli

    folder = tmp_path_factory.mktemp("demo")
    spec = reduced_demo(folder)
    result = CliRunner().invoke(cli, ["run", str(spec), "-q"])
    assert result.exit_code == 0, result.output
    return folder, spec, result
