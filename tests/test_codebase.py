"""The codebase's own rules (STYLE.md), read from the source with `ast`: no function over 60 lines, no file over 400,
and no import circle between the package's modules (imports inside functions count too: a circle hidden in a function
is still two modules that cannot be read, tested or moved apart; `if TYPE_CHECKING:` imports do not run, so do not)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "multitoken").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


class Imports(ast.NodeVisitor):
    """The package's modules one module imports: `from pkg import sub` names the submodule where sub is one, else pkg
    (whose __init__ runs)."""

    def __init__(self, name: str, is_package: bool, known: dict[str, Path]) -> None:
        self.name, self.is_package, self.known, self.found = name, is_package, known, set()

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.orelse:
                self.visit(statement)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.name.split(".")[:len(self.name.split(".")) - node.level + (1 if self.is_package else 0)]
            base = ".".join(package + ([node.module] if node.module else []))
        for alias in node.names:
            self.found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.known else base)


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for name, path in known.items():
        visitor = Imports(name, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text()))
        graph[name] = {m for m in visitor.found if m in known and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_function_over_its_lines():
    long = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over 60 lines: split them by what they do\n" + "\n".join(long)


def test_no_file_over_its_lines():
    long = [f"{path.relative_to(SRC)} ({n} lines)" for path in modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long, "files over 400 lines: split them by concern\n" + "\n".join(long)


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles: move what both need into a third module\n" + "\n".join(map(str, found))


def test_the_checks_can_fail():
    """The circle finder finds a circle (and only the circle) in a graph built to hold one."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from multitoken.model.mtp import M\n"
                     "def f():\n    from multitoken.model import layers\n")
    visitor = Imports("multitoken.model.kv_cache", False, modules())
    visitor.visit(tree)
    assert "multitoken.model.layers" in visitor.found and "multitoken.model.mtp" not in visitor.found
