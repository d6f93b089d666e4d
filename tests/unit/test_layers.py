"""The package's shape, enforced: every import points down the layers, and Click stays on top.

The imports of every module under ``hvdtrain/`` are read with ``ast`` (also those inside
functions: a lazy import is still a dependency), mapped to layers, and any arrow that points
up fails the test with file:line. The picture (``docs/ARCHITECTURE.md``), with the process
that runs each package (L: the launcher, the ``hvdtrain`` command a user types; W: the rank
wrapper around each rank; R: a rank; H: a host probed over ssh)::

    commands                  L R   Click: one module per command (a rank is started as one)
    train_launcher            L     train's launcher side: checks before any rank, restarts
    training,                 R     loop, worker, data, checkpoints;
      benchmarks, inference   L R   measuring ranks; evaluate/predict/export
    diagnostics               L     ``hvdtrain env``: reports on what launch does
    launch                    L     argv builders, supervisor, preflight, processes; the rank
                              W R H protocol, wrapper and host probe are shared (``PROCESSES``)
    frameworks                L R   one adapter per framework (the launcher's model check too)
    comm, compression         R     the Horovod seam
    cluster                   L W R hostfiles, sources, placement, pinning (stdlib only)
    types, catalog, errors    all   neutral types, the registries of names, the error tree

Code that runs in a rank reaches only code declared for ranks (``PROCESSES``): ``training``
cannot import the supervisor, the preflight or the launcher's checks, whatever their layer.

Within a layer, modules may import each other, but the whole module graph must be acyclic,
and so must the graph of packages: ``launch.probe → diagnostics → launch.allocator`` is no
module cycle, yet it ties ``launch`` and ``diagnostics`` into one knot (neither can be read,
moved or tested without the other). So the imports are also folded onto the packages (and the
top-level modules) beside each other, at every level of nesting, and that graph must be
acyclic too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hvdtrain"

# Highest first. A module belongs to the first layer with a prefix matching its name.
LAYERS: list[tuple[str, ...]] = [
    ("hvdtrain.commands", "hvdtrain.__main__"),
    # the inference server: reads checkpoints and exports with inference's own code
    ("hvdtrain.serving",),
    # the launcher's side of train: reads data and checkpoints with training's own code
    ("hvdtrain.train_launcher",),
    # inference: evaluate/predict/export, on the training data and checkpoints
    ("hvdtrain.training", "hvdtrain.benchmarks", "hvdtrain.inference"),
    ("hvdtrain.diagnostics",),
    ("hvdtrain.launch",),
    ("hvdtrain.frameworks",),
    # users' data files, one reader per format (stdlib and NumPy): for everything above
    ("hvdtrain.data",),
    ("hvdtrain.comm", "hvdtrain.compression"),
    ("hvdtrain.cluster",),
    ("hvdtrain.types",),
    ("hvdtrain.config",),
    ("hvdtrain.catalog", "hvdtrain.pretrained"),
    ("hvdtrain.errors", "hvdtrain"),
]
STDLIB_ONLY = ("hvdtrain.cluster", "hvdtrain.types", "hvdtrain.config", "hvdtrain.catalog",
               "hvdtrain.errors",
               "hvdtrain.pretrained")

# Which processes run a module: its own entry, else its nearest package's. LAUNCHER is the
# ``hvdtrain`` command a user types (with the helper processes it starts for its checks, such
# as the model check), WRAPPER the thin process around each rank, RANK a process that trains,
# evaluates, predicts or measures, HOST ``launch.probe`` run on a host over ssh, SERVER the
# inference server (``hvdtrain serve``). Every module must be in here: a new package says where
# it runs, and a module a rank runs may import only modules declared for ranks. SERVER is
# ``hvdtrain serve``'s process: it may import modules declared for it or for ranks, never
# launcher-only ones.
LAUNCHER, WRAPPER, RANK, HOST, SERVER = "launcher", "wrapper", "rank", "host", "server"
EVERY = frozenset({LAUNCHER, WRAPPER, RANK, HOST, SERVER})
PROCESSES: dict[str, frozenset[str]] = {
    "hvdtrain": EVERY, "hvdtrain.types": EVERY, "hvdtrain.catalog": EVERY,
    "hvdtrain.errors": EVERY, "hvdtrain.atomic": EVERY, "hvdtrain.pretrained": EVERY,
    "hvdtrain.config": EVERY,
    "hvdtrain.log": EVERY,  # the logger: configured by the CLI, used everywhere
    # a rank is started as ``python -m hvdtrain train ...``: the same command, inside a rank
    "hvdtrain.__main__": frozenset({LAUNCHER, RANK, SERVER}),
    "hvdtrain.commands": frozenset({LAUNCHER, RANK, SERVER}),
    "hvdtrain.serving": frozenset({SERVER}),
    "hvdtrain.serving.bench": frozenset({LAUNCHER}),  # starts a server, is its client
    "hvdtrain.train_launcher": frozenset({LAUNCHER}),
    "hvdtrain.training": frozenset({RANK}),
    "hvdtrain.benchmarks": frozenset({LAUNCHER, RANK}),
    # the checks before the ranks, the ranks, and the server (model cards, preparing rows)
    "hvdtrain.inference": frozenset({LAUNCHER, RANK, SERVER}),
    "hvdtrain.data": frozenset({LAUNCHER, RANK, SERVER}),  # whoever reads --data or a request
    "hvdtrain.diagnostics": frozenset({LAUNCHER}),
    "hvdtrain.launch": frozenset({LAUNCHER}),
    "hvdtrain.launch.protocol": frozenset({LAUNCHER, WRAPPER, RANK}),
    "hvdtrain.launch.rank_env": frozenset({LAUNCHER, WRAPPER, RANK}),
    "hvdtrain.launch.network": frozenset({LAUNCHER, WRAPPER, RANK}),
    "hvdtrain.launch.rank_wrapper": frozenset({WRAPPER}),
    "hvdtrain.launch.lifeline": frozenset({LAUNCHER, WRAPPER}),
    "hvdtrain.launch.streams": frozenset({LAUNCHER, WRAPPER}),
    "hvdtrain.launch.allocator": frozenset({LAUNCHER, WRAPPER}),
    "hvdtrain.launch.mpi_tuning": frozenset({LAUNCHER, WRAPPER}),
    # the argv builders, and ``detect_mpi_flavour``, which rank_env asks in a rank
    "hvdtrain.launch.argv": frozenset({LAUNCHER, WRAPPER, RANK}),
    "hvdtrain.launch.probe": frozenset({LAUNCHER, HOST}),
    "hvdtrain.frameworks": frozenset({LAUNCHER, RANK, SERVER}),  # the server's exports
    "hvdtrain.comm": frozenset({RANK}),
    "hvdtrain.compression": frozenset({RANK}),
    "hvdtrain.cluster": frozenset({LAUNCHER, WRAPPER, RANK}),  # a rank checks its pinning
    "hvdtrain.cluster.planning": frozenset({LAUNCHER}),
    "hvdtrain.cluster.selection": frozenset({LAUNCHER}),
    # plan --estimate; in a rank, PowerSGD's rule of which gradients it compresses
    "hvdtrain.cluster.estimate": frozenset({LAUNCHER, RANK}),
    "hvdtrain.cluster.discover": frozenset({LAUNCHER}),  # horovodrun runs it where it runs
}


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


def processes_of(module: str) -> frozenset[str]:
    """The processes that run ``module``: its own entry in ``PROCESSES``, else its nearest
    package's (the bare ``hvdtrain`` entry is the package's ``__init__`` only)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = PROCESSES.get(".".join(parts[:end]))
        if found is not None and (end == len(parts) or end > 1):
            return found
    raise AssertionError(f"{module} runs in no declared process: add it to PROCESSES")


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


def rank_imports_of_launcher_code(package: Path) -> list[str]:
    """Imports, by a module that runs in a rank, of a module that does not (annotations
    aside). The commands are the entry of every process and are not held to it: the rank
    side of ``hvdtrain train`` is ``training``'s, its launching side ``train_launcher``'s.
    A package's ``__init__`` is loaded with any module of it; the modules are what count."""
    packages = {module_name(p, package) for p in package.rglob("__init__.py")}
    problems = []
    for module, edges in import_graph(package).items():
        if RANK not in processes_of(module) or module.startswith("hvdtrain.commands") \
                or module == "hvdtrain.__main__":
            continue
        for target, line, path in edges:
            if (target in packages or RANK in processes_of(target)
                    or line in type_checking_lines(path)):
                continue
            problems.append(f"{path.relative_to(package.parent)}:{line}: {module} (runs in a "
                            f"rank) imports {target}, which runs only in "
                            f"{', '.join(sorted(processes_of(target)))}")
    return sorted(set(problems))


def server_imports_of_launcher_code(package: Path) -> list[str]:
    """Imports, by a module that runs in ``hvdtrain serve``'s process, of a module declared
    neither for the server nor for ranks (annotations aside): the server shares the ranks' code
    (checkpoints, data, inference), which imports only rank code itself, never the launcher's."""
    packages = {module_name(p, package) for p in package.rglob("__init__.py")}
    problems = []
    for module, edges in import_graph(package).items():
        if SERVER not in processes_of(module) or module.startswith("hvdtrain.commands") \
                or module == "hvdtrain.__main__":
            continue
        for target, line, path in edges:
            if (target in packages or processes_of(target) & {SERVER, RANK}
                    or line in type_checking_lines(path)):
                continue
            problems.append(f"{path.relative_to(package.parent)}:{line}: {module} (runs in the "
                            f"server) imports {target}, which runs only in "
                            f"{', '.join(sorted(processes_of(target)))}")
    return sorted(set(problems))


def cycles(package: Path) -> list[list[str]]:
    graph = {m: sorted({t for t, _, _ in edges if not m.startswith(t + ".")})
             for m, edges in import_graph(package).items()}
    return cycles_in(graph)


def _child_of(parent: str, module: str) -> str | None:
    """The package or module directly inside ``parent`` that ``module`` lies in (or is)."""
    if not module.startswith(parent + "."):
        return None
    return f"{parent}.{module[len(parent) + 1:].split('.')[0]}"


def package_graphs(package: Path) -> dict[str, dict[str, list[str]]]:
    """Per package P: the import graph between P's direct children (subpackages and modules),
    each subpackage standing for everything inside it. Imports of P itself (its __init__) and
    inside one child are not edges of P's graph."""
    graph = import_graph(package)
    packages = sorted({module_name(p, package) for p in package.rglob("__init__.py")})
    folded: dict[str, dict[str, list[str]]] = {}
    for parent in packages:
        edges: dict[str, set[str]] = {}
        for module, targets in graph.items():
            source = _child_of(parent, module)
            if source is None:
                continue
            edges.setdefault(source, set())
            for target, _line, _path in targets:
                child = _child_of(parent, target)
                if child is not None and child != source:
                    edges[source].add(child)
        folded[parent] = {m: sorted(t) for m, t in edges.items()}
    return folded


def package_cycles(package: Path) -> list[list[str]]:
    """Cycles between packages (or top-level modules) side by side, e.g. a module of
    ``launch`` importing ``diagnostics`` while ``diagnostics`` imports another of ``launch``."""
    return [cycle for graph in package_graphs(package).values() for cycle in cycles_in(graph)]


def cycles_in(graph: dict[str, list[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` closes (each one at least once)."""
    found: list[list[str]] = []
    state = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.setdefault(nxt, 0) == 1:
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


def test_the_package_graph_has_no_cycle() -> None:
    assert package_cycles(PACKAGE) == []


def test_every_module_runs_in_a_declared_process() -> None:
    for module in import_graph(PACKAGE):
        assert processes_of(module), module


def test_rank_side_code_imports_no_launcher_only_module() -> None:
    assert rank_imports_of_launcher_code(PACKAGE) == []


def test_server_code_imports_no_launcher_only_module() -> None:
    assert server_imports_of_launcher_code(PACKAGE) == []


def test_a_rank_importing_launcher_code_is_caught(tmp_path: Path) -> None:
    """The checker itself: the loop importing the restart policy (same direction as the
    layers allow between packages of one layer) or the supervisor (a lower layer)."""
    package = _package_with(tmp_path, {
        "__init__.py": "", "training/__init__.py": "", "launch/__init__.py": "",
        "train_launcher/__init__.py": "", "launch/supervisor.py": "",
        "launch/protocol.py": "", "train_launcher/restarts.py": "",
        "training/loop.py": ("from hvdtrain.launch import protocol\n"
                             "from hvdtrain.launch.supervisor import run_job\n"),
        "training/worker.py": "def f():\n    from hvdtrain.train_launcher import restarts\n"})
    problems = rank_imports_of_launcher_code(package)
    assert [p.split(": ", 1)[0] for p in problems] == ["hvdtrain/training/loop.py:2",
                                                      "hvdtrain/training/worker.py:2"]
    assert "hvdtrain.launch.supervisor, which runs only in launcher" in problems[0]


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


def test_a_package_cycle_without_a_module_cycle_is_caught(tmp_path: Path) -> None:
    """Issue 22's knot: launch.probe → diagnostics → launch.allocator. No module imports
    itself back, so only the package check sees it."""
    package = _package_with(tmp_path, {
        "__init__.py": "", "launch/__init__.py": "", "launch/allocator.py": "",
        "launch/probe.py": "from hvdtrain.diagnostics import installed_version\n",
        "diagnostics.py": "def f():\n    from hvdtrain.launch.allocator import setting\n"})
    assert cycles(package) == []
    found = package_cycles(package)
    assert len(found) == 1
    assert set(found[0]) == {"hvdtrain.launch", "hvdtrain.diagnostics"}


def test_a_package_cycle_deeper_down_is_caught(tmp_path: Path) -> None:
    """Two subpackages of one package, tied through different modules."""
    package = _package_with(tmp_path, {
        "__init__.py": "", "frameworks/__init__.py": "", "frameworks/torch/__init__.py": "",
        "frameworks/tensorflow/__init__.py": "",
        "frameworks/torch/adapter.py": "from ..tensorflow import data\n",
        "frameworks/tensorflow/data.py": "",
        "frameworks/tensorflow/adapter.py": "import hvdtrain.frameworks.torch.adapter\n"})
    assert cycles(package) == []
    found = package_cycles(package)
    assert [set(c) for c in found] == [{"hvdtrain.frameworks.torch",
                                        "hvdtrain.frameworks.tensorflow"}]


def test_imports_of_a_package_init_and_within_one_package_are_no_package_cycle(
        tmp_path: Path) -> None:
    package = _package_with(tmp_path, {
        "__init__.py": "from hvdtrain import launch\n", "launch/__init__.py": "",
        "launch/job.py": "import hvdtrain\nfrom hvdtrain.launch import probe\n",
        "launch/probe.py": "",
        "diagnostics.py": "from hvdtrain.launch import probe\n"})
    assert package_cycles(package) == []
