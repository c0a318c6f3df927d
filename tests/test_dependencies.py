"""What ml4ml imports is what pyproject.toml declares; S3 support is an extra it can do without."""

import ast
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
WITHOUT_S3 = """
import sys
sys.modules["boto3"] = sys.modules["s3fs"] = None  # as if not installed
from ml4ml.cli import main
main(sys.argv[1:])
"""


def requirements(extra=None) -> list[Requirement]:
    texts = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def imported_packages() -> dict[str, set[str]]:
    """Top-level packages other than the standard library's that ml4ml imports anywhere
    (in functions too), each with the modules that import it."""
    found: dict[str, set[str]] = {}
    for file in sorted((ROOT / "ml4ml").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top != "ml4ml" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(file.relative_to(ROOT)))
    return found


def test_every_package_ml4ml_imports_is_declared():
    declared = {canonicalize_name(r.name) for r in requirements() + requirements("s3")}
    distributions = importlib.metadata.packages_distributions()
    imported = imported_packages()
    assert {"numpy", "xarray", "zarr", "dask", "distributed", "sklearn", "skops", "fsspec",
            "boto3", "torch"} <= set(imported)
    undeclared = {name: sorted(where) for name, where in imported.items()
                  if not {canonicalize_name(d) for d in distributions.get(name, [])} & declared}
    assert undeclared == {}


def test_the_s3_extra_is_what_s3_stores_need_and_the_test_extra_pulls_it_in():
    assert sorted(canonicalize_name(r.name) for r in requirements("s3")) == ["boto3", "s3fs"]
    assert {canonicalize_name(r.name) for r in requirements()}.isdisjoint({"boto3", "s3fs"})
    (ml4ml_s3,) = [r for r in requirements("test") if r.name == "ml4ml"]
    assert ml4ml_s3.extras == {"s3"}


def test_what_is_installed_here_meets_every_lower_bound():
    for requirement in requirements() + requirements("s3") + requirements("test"):
        if requirement.name == "ml4ml":
            continue
        version = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


def test_every_module_imports_without_the_s3_extra():
    result = subprocess.run([sys.executable, str(ROOT / ".ci" / "import_all.py"),
                             "--without", "boto3", "s3fs"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("imported ") and " (without boto3, s3fs) " in result.stdout
    n, _, total = result.stdout.split()[1:4]
    assert n == total and int(total) > 50


def test_an_s3_store_without_the_s3_extra_is_one_clear_line(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "s3"\n[store]\npath = "s3://bucket/db.zarr"\n[suites.digits]\n'
                    'n_samples = 30\n[transforms.rotation]\ngrid = [-10, 10, 5]\n[zoo]\n'
                    'arch = "cnn5"\n[[zoo.grids]]\nseed = [0]\n')
    for args in (["measure", "s3://bucket/db.zarr", "-q"], ["train", str(spec), "-q"]):
        result = subprocess.run([sys.executable, "-c", WITHOUT_S3, *args], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr
        assert result.stderr == ("error: s3://bucket/db.zarr: an s3:// store needs the s3 "
                                 "extra, and s3fs and boto3 are not installed "
                                 "(pip install 'ml4ml[s3]')\n")
