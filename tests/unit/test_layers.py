"""The package's shape, enforced: every import points down the layers, and Click stays on top.

The imports of every module under ``hvdtrain/`` are read with ``ast`` (also those inside
functions: a lazy import is still a dependency), mapped to layers, and any arrow that points
up fails the test with file:line. The picture (README "Layout", ``DESIGN.md``)::

    commands                         Click: one module per command
    training, benchmarks             loop, worker, data, checkpoints; measuring ranks
    launch, diagnostics              argv builders, rank protocol, supervisor
    frameworks                       one adapter per framework
    comm                             the Horovod seam
    cluster                          hostfiles, sources, placement, pinning (stdlib only)
    types, catalog, errors           neutral types, the registries of names, the error tree

Within a layer, modules may import each other, but the whole module graph must be acyclic.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hvdtrain"

# Highest first. A module belongs to the first layer with a prefix matching its name.
LAYERS: list[tuple[str, ...]] = [
    ("hvdtrain.commands", "hvdtrain.__main__"),
    # inference: evaluate/predict/export, on the training data and checkpoints
    ("hvdtrain.training", "hvdtrain.benchmarks", "hvdtrain.inference"),
    ("hvdtrain.launch", "hvdtrain.diagnostics"),
    ("hvdtrain.frameworks",),
    ("hvdtrain.comm", "hvdtrain.compression"),
    ("hvdtrain.cluster",),
    ("hvdtrain.types",),
    ("hvdtrain.catalog",),
    ("hvdtrain.errors", "hvdtrain"),
]
STDLIB_ONLY = ("hvdtrain.cluster", "hvdtrain.types", "hvdtrain.catalog", "hvdtrain.errors")


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports_of(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")
                parent = parent if is_package else parent[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            # "from hvdtrain import comm" imports the submodule hvdtrain.comm
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
            found.append((base, node.lineno))
    return found


def type_checking_lines(path: Path) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (imported for annotations only)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def internal_target(name: str, modules: set[str]) -> str | None:
    """The hvdtrain module an imported name refers to (longest known prefix)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def import_graph(package: Path) -> dict[str, list[tuple[str, int, Path]]]:
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, list[tuple[str, int, Path]]] = {}
    for module, path in files.items():
        edges = []
        for name, line in imports_of(path, module):
            target = internal_target(name, set(files))
            if target is not None and target != module:
                edges.append((target, line, path))
        graph[module] = edges
    return graph


def upward_arrows(package: Path) -> list[str]:
    problems = []
    for module, edges in import_graph(package).items():
        for target, line, path in edges:
            # a package's __init__ may be imported by anything inside it (python does anyway)
            if module.startswith(target + ".") and target != "hvdtrain":
                continue
            if layer_of(target) < layer_of(module):
                problems.append(f"{path.relative_to(package.parent)}:{line}: {module} imports "
                                f"{target}, which is a higher layer")
    return sorted(set(problems))


def cycles(package: Path) -> list[list[str]]:
    graph = {m: sorted({t for t, _, _ in edges if not m.startswith(t + ".")})
             for m, edges in import_graph(package).items()}
    found, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state[nxt] == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif state[nxt] == 0:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in graph:
        if state[node] == 0:
            visit(node, [node])
    return found


def test_every_import_points_down() -> None:
    assert upward_arrows(PACKAGE) == []


def test_the_module_graph_has_no_cycle() -> None:
    assert cycles(PACKAGE) == []


def test_click_only_in_commands_and_lower_layers_stdlib_only() -> None:
    problems = []
    for path in PACKAGE.rglob("*.py"):
        module = module_name(path, PACKAGE)
        annotations_only = type_checking_lines(path)
        for name, line in imports_of(path, module):
            top = name.split(".")[0]
            if line in annotations_only:
                continue
            if top == "click" and not module.startswith("hvdtrain.commands"):
                problems.append(f"{module}:{line} imports click")
            if module.startswith(STDLIB_ONLY) and top in ("numpy", "torch", "tensorflow",
                                                           "horovod", "yaml", "click"):
                problems.append(f"{module}:{line} imports {top}")
    assert problems == []


def _package_with(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "hvdtrain"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(("files", "fragment"), [
    ({"__init__.py": "", "launch/__init__.py": "", "training/__init__.py": "",
      "launch/job.py": "from hvdtrain.training import loop\n", "training/loop.py": ""},
     "hvdtrain/launch/job.py:1: hvdtrain.launch.job imports hvdtrain.training.loop"),
    ({"__init__.py": "", "cluster/__init__.py": "", "commands/__init__.py": "",
      "cluster/hosts.py": "def f():\n    from ..commands import plan\n",
      "commands/plan.py": ""},
     "hvdtrain.cluster.hosts imports hvdtrain.commands.plan"),
])
def test_an_upward_import_is_caught(tmp_path: Path, files: dict[str, str],
                                    fragment: str) -> None:
    """The checker itself: a reintroduced launch → training arrow (or a lazy, relative one
    from cluster to commands) is reported with its file and line."""
    problems = upward_arrows(_package_with(tmp_path, files))
    assert any(fragment in p for p in problems), problems


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    package = _package_with(tmp_path, {
        "__init__.py": "", "training/__init__.py": "",
        "training/loop.py": "from hvdtrain.training import worker\n",
        "training/worker.py": "import hvdtrain.training.loop\n"})
    found = cycles(package)
    assert len(found) == 1
    assert set(found[0]) == {"hvdtrain.training.loop", "hvdtrain.training.worker"}
