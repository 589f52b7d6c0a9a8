"""The directions that hold between numpygpt's modules (README's code map), read from the
source: bpe never imports numpygpt; the model a learner reads never imports the wings built
around it; the kernels import nothing of the project; only commands/ (and its entry points)
import commands/ and serve/; and no modules import each other in a circle."""
import ast
from pathlib import Path

import pytest

from conftest import REPO_ROOT

# The top of numpygpt/: the model and what it needs. `progress` is the status line that the
# wings share, and imports nothing.
MODEL = {"config", "params", "kernels", "layers", "loss", "model", "optim", "gradcheck", "mistakes", "errors",
         "progress"}
WINGS = {"data", "training", "formats", "inference", "serve", "commands"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every project module that `path` imports, at its top or inside a function. Importing
    a.b.c imports the packages a and a.b too, except the packages `path` is itself inside
    (they are loading already when it is)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from . import x` may name a module: count both readings, keep those that exist.
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in found if m.split(".")[0] in ("numpygpt", "bpe") and not (name + ".").startswith(m + ".")}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = [*(REPO_ROOT / "numpygpt").rglob("*.py"), *(REPO_ROOT / "bpe").rglob("*.py")]
    modules = {module_name(f): f for f in files}
    return {name: imports(path) & modules.keys() for name, path in modules.items()}


def test_the_graph_is_read(graph):
    assert "numpygpt.layers" in graph["numpygpt.model"]
    assert "numpygpt.model" in graph["numpygpt.formats.checkpoint"]
    assert "numpygpt.data.corpus" in graph["numpygpt.data.text"]  # a relative import, resolved


def test_bpe_never_imports_numpygpt(graph):
    offenders = {m: sorted(t for t in targets if t.startswith("numpygpt"))
                 for m, targets in graph.items() if m.startswith("bpe")}
    assert not any(offenders.values()), offenders


def test_the_model_never_imports_the_wings(graph):
    for name in MODEL:
        wings = sorted(t for t in graph[f"numpygpt.{name}"] if t.split(".")[1:2] and t.split(".")[1] in WINGS)
        assert not wings, f"numpygpt.{name} imports {wings}"


def test_the_kernels_import_nothing_of_the_project(graph):
    assert graph["numpygpt.kernels"] == set()


def test_only_the_command_line_imports_commands_and_serve(graph):
    for name, targets in graph.items():
        if name.startswith(("numpygpt.commands", "numpygpt.__main__")):
            continue
        assert not any(t.startswith("numpygpt.commands") for t in targets), name
        if not name.startswith("numpygpt.serve"):
            assert not any(t.startswith("numpygpt.serve") for t in targets), name


def test_no_import_circles(graph):
    """Tarjan's strongly connected components: a component of more than one module is a circle."""
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, circles
