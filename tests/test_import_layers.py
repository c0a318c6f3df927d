"""The import graph of ml4ml has no cycles and its layers point one way (issue 26.1).

Every module of ``ml4ml/`` is read with ``ast`` (nothing is imported, no third-party tool):
its imports are the ``import`` and ``from ... import`` statements anywhere in it (at module
level, in functions, in ``if TYPE_CHECKING`` blocks: a function-local import of a higher
layer is still an upward import), relative ones resolved against its package, plus the
module names a package's ``lazy_exports({...})`` table or an ``importlib.import_module``
call names as string literals (they are imports made later). ``from ml4ml.x import y`` is
an edge to ``ml4ml.x.y`` when that is a module, else to ``ml4ml.x``. Importing a submodule
also runs its package's ``__init__``, which is not counted: a package's ``__init__`` that
re-exports its submodules would otherwise close a cycle with every one of them.

Run as a script (``python tests/test_import_layers.py``) it prints the graph's cycles and
upward imports, for the record (issue 26, "Shown, not claimed").
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "ml4ml"
ROOT = Path(__file__).resolve().parents[1]

# The layers, bottom first: a module may import its own layer and the layers below it,
# never one above. A name is a top-level module or package of ml4ml (its submodules with
# it). The package root (ml4ml/__init__.py, lazy exports of everything) may import any
# module; it is in no layer.
LAYERS = [
    # Bottom: the store (the only IO), dims, errors, progress, and the small shared
    # utilities that import only bottom things: _lazy (lazy exports: importlib only),
    # failures (errors only), logs (nothing of ml4ml) and cluster (errors, logs, failures;
    # every stage runs its work through it, so it must sit below them all).
    ["store", "dims", "errors", "progress", "_lazy", "failures", "logs", "cluster"],
    # The spec layer: the spec's typed models, messages and name registries (spec) and
    # reading a spec file (config); they may import only the bottom. The stages register
    # their names (suites, transforms) into spec.registry.
    ["config", "spec"],
    ["data"],
    # The zoo and the model sources (zoo.sources: load(mid) -> (module, preprocessing)).
    ["zoo"],
    ["probe"],
    ["measure"],
    ["assess"],
    ["report"],
    ["labelling"],
    ["cli", "__main__"],
]


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every module of ``package`` under ``root``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules) -> str | None:
    """The module ``name`` stands for: itself, else its longest prefix that is a module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _string_imports(node, package: str) -> list[str]:
    """Module names a ``lazy_exports(name, {...})`` or ``import_module("...")`` call names."""
    if not isinstance(node, ast.Call):
        return []
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    values = []
    if called == "lazy_exports":
        for arg in node.args:
            if isinstance(arg, ast.Dict):
                values += arg.values
    elif called == "import_module" and node.args:
        values = node.args[:1]
    return [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)
            and (v.value == package or v.value.startswith(package + "."))]


def module_imports(name: str, path: Path, modules, package: str = PACKAGE) -> set[str]:
    """The modules of ``package`` that module ``name`` (its file ``path``) imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(_resolve(a.name, modules) for a in node.names
                       if a.name == package or a.name.startswith(package + "."))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from its own package, level - 1 packages up
                parts = own_package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base != package and not base.startswith(package + "."):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else _resolve(base, modules))
        else:
            out.update(_resolve(n, modules) for n in _string_imports(node, package))
    out.discard(None)
    out.discard(name)
    return out


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """{module: the modules of the package it imports}."""
    modules = module_files(root, package)
    return {name: module_imports(name, path, modules, package)
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def layer_of(module: str, package: str = PACKAGE, layers=LAYERS) -> int | None:
    """The index of ``module``'s layer (0: bottom); None for the package root, and for a
    module of no layer (``unplaced`` lists those)."""
    top = module[len(package) + 1:].partition(".")[0] if module != package else ""
    for k, names in enumerate(layers):
        if top in names:
            return k
    return None


def unplaced(graph, package: str = PACKAGE, layers=LAYERS) -> list[str]:
    """Modules (other than the package root) that no layer names."""
    return sorted(m for m in graph if m != package and layer_of(m, package, layers) is None)


def upward(graph, package: str = PACKAGE, layers=LAYERS) -> list[str]:
    """``"a (layer i) -> b (layer j)"`` for every import of a higher layer (j > i). The
    package root counts as the top layer (its lazy exports reach every layer): only the
    top may import it."""
    def named(k):
        return f"{k}: {'/'.join(layers[k][:2])}"

    out = []
    for module in sorted(graph):
        if module == package:
            continue
        mine = layer_of(module, package, layers)
        for dep in sorted(graph[module]):
            theirs = len(layers) - 1 if dep == package else layer_of(dep, package, layers)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(f"{module} (layer {named(mine)}) -> {dep} (layer {named(theirs)})")
    return out


def report(root: Path, package: str = PACKAGE, layers=LAYERS) -> tuple[list, list, list, str]:
    """(cycles, upward imports, unplaced modules, the text that says them)."""
    graph = import_graph(root, package)
    found, up = cycles(graph), upward(graph, package, layers)
    lost = unplaced(graph, package, layers)
    edges = sum(len(v) for v in graph.values())
    lines = [f"import graph of {package}: {len(graph)} modules, {edges} edges",
             f"cycles (strongly connected groups of modules): {len(found)}"]
    lines += ["   " + " <-> ".join(group) for group in found]
    lines += [f"upward imports: {len(up)}"] + ["   " + line for line in up]
    if lost:
        lines += [f"modules in no layer: {len(lost)}"] + ["   " + m for m in lost]
    return found, up, lost, "\n".join(lines)


def test_ml4ml_has_no_import_cycles_and_its_layers_point_one_way(capsys):
    found, up, lost, text = report(ROOT)
    with capsys.disabled():
        print("\n" + text)
    assert len(module_files(ROOT)) > 50  # the package was read, not an empty folder
    assert not found and not up and not lost, text


def test_the_checker_finds_a_cycle_an_upward_import_and_an_unplaced_module(tmp_path):
    """A tiny package with two cycles (one through a function-local and a relative import),
    two upward imports (one from a function, one of the package root), a lazy-export edge
    and a module of no layer: the checker reports each, and nothing else."""
    files = {
        "fake/__init__.py": "",
        "fake/dims.py": "import fake\n",
        "fake/store/__init__.py": "from fake.store import groups\n",
        "fake/store/groups.py": "from fake import dims\n\n\ndef f():\n"
                                "    from fake.report.page import render\n    return render\n",
        "fake/data/__init__.py": "from fake._lazy import lazy_exports\n"
                                 "__getattr__ = lazy_exports(__name__, {'S': 'fake.data.b'})\n",
        "fake/data/a.py": "from . import b\n",
        "fake/data/b.py": "def g():\n    from fake.data import a\n    return a\n",
        "fake/_lazy.py": "import importlib\n",
        "fake/report/__init__.py": "",
        "fake/report/page.py": "from fake.store.groups import f\n\n\ndef render():\n"
                               "    return f\n",
        "fake/extra.py": "from fake import dims\n",
        "fake/cli.py": "import fake\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, "fake")
    assert graph["fake.data.a"] == {"fake.data.b"}  # relative import resolved
    assert graph["fake.data"] == {"fake._lazy", "fake.data.b"}  # the lazy export counted
    found, up, lost, text = report(tmp_path, "fake")
    print(text)
    assert found == [["fake.data.a", "fake.data.b"],
                     ["fake.report.page", "fake.store.groups"]], text
    assert up == ["fake.dims (layer 0: store/dims) -> fake (layer 9: cli/__main__)",
                  ("fake.store.groups (layer 0: store/dims) -> fake.report.page "
                   "(layer 7: report)")], text  # fake.cli may import the root: it is the top
    assert lost == ["fake.extra"], text


if __name__ == "__main__":
    print(report(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT)[3])
