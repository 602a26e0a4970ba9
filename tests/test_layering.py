"""The command line sits over the core, never the reverse (issue 20).

The command layer is the command line (the reconcile/cli/ package and
__main__) and the modules that draw rich output (RENDERING below): it owns
typer, rich output and the flag definitions. Every other module of reconcile/
is the core: it never imports typer, rich (or click, under typer) nor any
module of the command layer, at the top or inside a function.

The import graph must have no cycle. Counted: the imports a module runs when
it is loaded, i.e. `import`/`from ... import` statements at module level
(inside a module-level if/try too), except under `if TYPE_CHECKING:`, which
never runs. An import inside a function runs only when called, after every
module is loaded, so it cannot meet a half-loaded module and is not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import reconcile

PACKAGE = Path(reconcile.__file__).parent
COMMAND_PACKAGE = "reconcile.cli"  # typer: the commands and their flags, one module a command
RENDERING = {"reconcile.report", "reconcile.restore_output"}  # rich: tables, bars
UI_LIBRARIES = ("typer", "rich", "click")


def in_command_line(name: str) -> bool:
    return name in (COMMAND_PACKAGE, "reconcile.__main__") or name.startswith(COMMAND_PACKAGE + ".")


def in_command_layer(name: str) -> bool:
    return in_command_line(name) or name in RENDERING


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imported(module: str, nodes, is_package: bool) -> set[str]:
    """every module name the import statements among nodes name (a from-import
    names the module and, for each name, module.name, which may be a submodule)"""
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node, is_package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_level(body) -> list[ast.stmt]:
    """the statements run when the module is loaded: the body, and the bodies
    of its module-level if/try/with blocks, but not functions, classes or TYPE_CHECKING"""
    out = []
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                out += module_level(node.body)
            out += module_level(node.orelse)
        elif isinstance(node, (ast.Try, ast.With)):
            out += module_level(node.body)
            for handler in getattr(node, "handlers", []):
                out += module_level(handler.body)
            out += module_level(getattr(node, "orelse", [])) + module_level(getattr(node, "finalbody", []))
        else:
            out.append(node)
    return out


def load_time_graph() -> dict[str, set[str]]:
    mods = modules()
    graph = {}
    for name, tree in mods.items():
        is_package = name == "reconcile" or (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
        targets = imported(name, module_level(tree.body), is_package)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_core_never_imports_typer_rich_or_the_command_layer():
    wrong = set()
    for name, tree in modules().items():
        if in_command_layer(name):
            continue
        for target in imported(name, ast.walk(tree), False):
            if target.split(".")[0] in UI_LIBRARIES:
                wrong.add(f"{name} imports {target.split('.')[0]}")
            elif in_command_layer(target):
                wrong.add(f"{name} imports {target}")
    assert not wrong, "the core reaches up into the command layer:\n" + "\n".join(sorted(wrong))


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(load_time_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_see_what_they_look_for():
    # the rules above would pass on a tree they could not read: they must see this much
    graph = load_time_graph()
    assert {"reconcile.errors", "reconcile.apply"} <= graph["reconcile.engine.run"]
    # the command line is a package of several modules, each seen
    assert {"reconcile.cli.root", "reconcile.cli.mirror"} <= graph["reconcile.cli"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    tree = ast.parse("import typer\nif TYPE_CHECKING:\n    import rich\ndef f():\n    from . import cli\n")
    assert imported("reconcile.x", module_level(tree.body), False) == {"typer"}
    assert imported("reconcile.x", ast.walk(tree), False) == {"typer", "rich", "reconcile", "reconcile.cli"}


MAX_MODULE_LINES = 600  # issue 20: modules a reader can hold in mind


def test_no_module_is_longer_than_a_reader_can_hold_in_mind():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in sorted(PACKAGE.rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these by what their parts are (over {MAX_MODULE_LINES} lines): {long}"
