"""The package's layers: the import graph of ``src/`` has no cycle, and imports stay at the top
of a module except for optional heavy dependencies.

The graph is read from the AST of every module under ``src/``: each ``import`` and ``from …
import`` statement, wherever it is (module level, inside a function, under ``if
TYPE_CHECKING:``), relative imports resolved against the importing module. ``from pkg import
name`` is an edge to the module ``pkg.name`` when that module exists, else to ``pkg``. A
module's parent packages are not edges: Python runs their ``__init__`` first, but that is not
a dependency the module chose. The oracle of the cycle check is a plain depth-first search;
``test_the_checks_find_what_they_look_for`` feeds both checks a small tree with a cycle and an
import inside a function, so neither check can pass by finding nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Modules that may be imported inside a function: optional dependencies (extras of
#: pyproject.toml or packages a user installs for one feature) that are heavy to import or
#: absent on most machines, so a module must not import them at its top.
OPTIONAL = ("triton", "matplotlib", "tensorboard", "torch.utils.tensorboard", "fairseq", "yaml")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_modules(root: Path) -> dict[str, tuple[Path, ast.Module]]:
    """``{dotted name: (path, AST)}`` of every ``.py`` file under ``root``."""
    return {
        module_name(p, root): (p, ast.parse(p.read_text(encoding="utf-8"), filename=str(p)))
        for p in sorted(root.rglob("*.py"))
    }


def _resolve(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute module a ``from`` import names (``level`` dots: relative)."""
    if node.level == 0:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _catches_import_error(node: ast.Try) -> bool:
    names = set()
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names |= {t.id for t in types if isinstance(t, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def imports_of(
    name: str, path: Path, tree: ast.Module, known: set[str]
) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import statement; ``from pkg
    import x`` names the module ``pkg.x`` when it is in ``known``, else ``pkg``."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(child, name, path)
                for a in child.names:
                    sub = f"{base}.{a.name}"
                    found.append((sub if sub in known else base, child.lineno, in_function))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if in_function and isinstance(child, ast.Try) and _catches_import_error(child):
                inner = False  # ``try: import x / except ImportError``: optional by construction
            visit(child, inner)

    visit(tree, False)
    return found


def import_graph(modules: dict[str, tuple[Path, ast.Module]]) -> dict[str, set[str]]:
    """Edges between the modules of ``modules`` only (third-party imports dropped)."""
    known = set(modules)
    return {
        name: {t for t, _, _ in imports_of(name, path, tree, known) if t in known and t != name}
        for name, (path, tree) in modules.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge of a depth-first search (empty: the graph is acyclic)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return cycles


def function_level_imports(
    modules: dict[str, tuple[Path, ast.Module]],
) -> list[str]:
    """``"module:line imports target"`` for each import inside a function that is not of an
    optional dependency."""
    bad = []
    for name, (path, tree) in modules.items():
        seen = set()
        for target, line, in_function in imports_of(name, path, tree, set(modules)):
            optional = any(target == o or target.startswith(o + ".") for o in OPTIONAL)
            if in_function and not optional and line not in seen:
                seen.add(line)
                bad.append(f"{name}:{line} imports {target}")
    return bad


def test_the_import_graph_of_src_has_no_cycle():
    cycles = find_cycles(import_graph(read_modules(SRC)))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_inside_functions_are_only_optional_dependencies():
    bad = function_level_imports(read_modules(SRC))
    assert not bad, "imports inside functions:\n" + "\n".join(bad)


def test_the_checks_find_what_they_look_for(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import pkg.a\nimport json\n")
    (pkg / "d.py").write_text(
        "def g():\n    import matplotlib.pyplot\n    try:\n        import numba\n"
        "    except ImportError:\n        pass\n    import numpy\n"
    )
    modules = read_modules(tmp_path)
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg.sub.b"}  # not pkg.sub: b is a module
    assert graph["pkg.sub.b"] == {"pkg.c"}  # the relative import, resolved
    assert graph["pkg.c"] == {"pkg.a"}  # json is not a module of the tree
    assert [sorted(c[:-1]) for c in find_cycles(graph)] == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert function_level_imports(modules) == [
        "pkg.d:7 imports numpy",  # neither optional nor guarded
        "pkg.sub.b:2 imports pkg.c",
    ]
    (pkg / "c.py").write_text("import json\n")
    assert find_cycles(import_graph(read_modules(tmp_path))) == []
