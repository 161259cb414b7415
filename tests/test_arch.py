"""Architecture guards on bluegreen/: no import cycle, no module over 350 lines, no function
over 50 lines, no ``lbs`` outside the config and the nginx tier, no runner name outside runners/.

Each size and placement guard keeps a PENDING set: today's offenders, which other work is
fixing. A guard fails for any offender not in its set, and ``test_pending_entries_still_offend``
fails for an entry that no longer offends, so the sets only shrink: drop the entry when the fix
lands.

Imports are read with ``ast`` from every module under bluegreen/, wherever they are written:
at the top, inside functions or inside ``try``. Only imports under ``if TYPE_CHECKING:`` are
left out, since they never run. ``from bluegreen.pkg import name`` counts as an import of
``bluegreen.pkg.name`` when that is a module, else of ``bluegreen.pkg``. The implicit import
of a package's ``__init__`` when one of its submodules is imported is not an edge: a package
that re-exports its submodules would otherwise always be a cycle.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "bluegreen"
MAX_LINES = 350
MAX_FUNCTION_LINES = 50
# Where the topology (load balancers or not) may be spelled out.
LBS_ALLOWED = ("bluegreen/config/", "bluegreen/sandbox/config.py", "bluegreen/ops/tier.py",
               "bluegreen/ops/lbtier.py")
RUNNER_NAMES = frozenset({"systemd", "elixir"})
# Where a runner may be named; cli/tools.py has `bg init`'s option help; the rehearsal's
# Elixir app writes its own config (as sandbox/config.py writes `lbs`).
RUNNER_ALLOWED = ("bluegreen/runners/", "bluegreen/config/", "bluegreen/cli/tools.py",
                  "bluegreen/rehearse/apps.py")

# Known offenders ("file" or "file::function") a guard tolerates while a split is under way:
# empty since issue 20 landed; an entry must name work that removes it.
PENDING: dict[str, frozenset[str]] = {
    "module lines": frozenset(),
    "function lines": frozenset(),
    "lbs": frozenset(),
    "runner names": frozenset(),
}


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """``{"bluegreen.ops.core": path, ...}`` for every module of the package."""
    mods: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


@functools.cache
def _tree(path: Path) -> ast.Module:
    """``path`` parsed once for every guard."""
    return ast.parse(path.read_text(), str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, except the bodies of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The package's modules that module ``name`` (at ``path``) imports."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(_tree(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for target in targets:
            # `import bluegreen.a.b` names bluegreen.a.b; keep the longest known module prefix.
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                found.add(".".join(parts))
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = module_files(package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, set(group)) for group in groups]


def _one_cycle(graph: Mapping[str, Iterable[str]], group: set[str]) -> list[str]:
    """A concrete path around ``group`` (a strongly connected set), for the error message."""
    start = min(group)
    path, seen = [start], {start}
    while True:
        nexts = sorted(n for n in graph.get(path[-1], ()) if n in group)
        back = [n for n in nexts if n in seen]
        if back:
            first = back[0]
            return [*path[path.index(first):], first]
        path.append(nexts[0])
        seen.add(nexts[0])


def _walk(tree: ast.AST) -> Iterator[tuple[str | None, ast.AST]]:
    """Every node with the qualified name of the innermost function or class holding it (a
    definition holds itself); None at module level."""
    stack: list[tuple[str | None, ast.AST]] = [(None, tree)]
    while stack:
        name, node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{name}.{node.name}" if name else node.name
        yield name, node
        stack.extend((name, child) for child in ast.iter_child_nodes(node))


def _identifier(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.arg | ast.keyword):
        return node.arg
    return None


def _offences(path: Path, rel: str) -> dict[str, dict[str, str]]:
    """What ``path`` (``rel`` from the repo) breaks, per guard: ``{where: why}``."""
    tree = _tree(path)
    lines = path.read_text().splitlines()
    found: dict[str, dict[str, str]] = {guard: {} for guard in PENDING}
    if len(lines) > MAX_LINES:
        found["module lines"][rel] = f"{len(lines)} lines (at most {MAX_LINES})"
    for name, node in _walk(tree):
        where = f"{rel}::{name}" if name else rel
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or line) - line + 1
            if length > MAX_FUNCTION_LINES:
                found["function lines"][where] = f"{length} lines (at most {MAX_FUNCTION_LINES})"
        if _identifier(node) == "lbs" and not rel.startswith(LBS_ALLOWED):
            found["lbs"][where] = f"line {line} names lbs"
        # A runner name as a runner name: on a line that speaks of the runner.
        if (isinstance(node, ast.Constant) and node.value in RUNNER_NAMES
                and "runner" in lines[line - 1] and not rel.startswith(RUNNER_ALLOWED)):
            found["runner names"][where] = f"line {line} names runner {node.value!r}"
    return found


def offenders(guard: str, package: Path = PACKAGE) -> dict[str, str]:
    """``{"file" or "file::function": why}`` for what breaks ``guard`` in ``package``."""
    return _all_offences(package)[guard]


@functools.cache
def _all_offences(package: Path) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {guard: {} for guard in PENDING}
    for path in module_files(package).values():
        for guard, where in _offences(path, str(path.relative_to(package.parent))).items():
            found[guard].update(where)
    return found


def _only_pending(guard: str, advice: str) -> None:
    new = {where: why for where, why in offenders(guard).items()
           if where not in PENDING[guard]}
    assert not new, "\n".join(f"{where}: {why}; {advice}" for where, why in sorted(new.items()))


# -- the guard's own machinery, on graphs made up for the purpose -----------------------------


def test_find_cycles_names_each_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set[str]()}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": set[str]()}) == []


def test_imports_inside_functions_and_relative_imports_count(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("from .b import g\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
        "def g():\n    import pkg.a\n"
    )
    graph = import_graph(pkg)
    assert graph == {
        "pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.a"]]


def test_each_guard_names_its_offenders_and_spares_the_allowed_places(tmp_path: Path) -> None:
    pkg = tmp_path / "bluegreen"
    for sub in ("ops", "config", "runners"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (pkg / "ops" / "big.py").write_text(
        "class Tier:\n    def long(self) -> None:\n" + body + "\n" * (MAX_LINES - 55)
        + "def short(cfg):\n    def one(lbs):\n        return cfg.app.runner == 'systemd'\n"
        + "    return one\n")
    (pkg / "ops" / "ok.py").write_text(
        "def fine(app):\n    return app == 'elixir'  # the rehearsal's app\n")
    (pkg / "config" / "__init__.py").write_text(
        "def f(t):\n    return t.lbs, {'runner': 'elixir'}\n")
    (pkg / "runners" / "__init__.py").write_text("def f(c):\n    return c.runner == 'systemd'\n")
    assert offenders("module lines", pkg) == {"bluegreen/ops/big.py": "351 lines (at most 350)"}
    assert offenders("function lines", pkg) == {
        "bluegreen/ops/big.py::Tier.long": "51 lines (at most 50)"}
    assert offenders("lbs", pkg) == {"bluegreen/ops/big.py::short.one": "line 349 names lbs"}
    assert offenders("runner names", pkg) == {
        "bluegreen/ops/big.py::short.one": "line 350 names runner 'systemd'"}


# -- the guards --------------------------------------------------------------------------------


def test_no_import_cycle_among_bluegreen_modules() -> None:
    graph = import_graph()
    assert "bluegreen.ops.core" in graph and graph["bluegreen.runners"]  # it read the tree
    assert ["import cycle: " + " -> ".join(cycle) for cycle in find_cycles(graph)] == []


def test_no_module_over_350_lines() -> None:
    _only_pending("module lines", "split it by concern")


def test_no_function_over_50_lines() -> None:
    _only_pending("function lines", "split it into steps")


def test_no_lbs_outside_the_config_and_the_nginx_tier() -> None:
    """Topology is asked in one place, the nginx tier, not at every call site."""
    _only_pending("lbs", "ask the nginx tier instead")


def test_no_runner_name_outside_runners() -> None:
    """What differs between runners is behind the runner protocol (bluegreen/runners/)."""
    _only_pending("runner names", "widen the runner protocol instead")


@pytest.mark.parametrize("guard", sorted(PENDING))
def test_pending_entries_still_offend(guard: str) -> None:
    """A fix landed: drop its entry, so the guard holds the ground gained."""
    stale = sorted(PENDING[guard] - offenders(guard).keys())
    assert not stale, f"no longer offending; drop from PENDING[{guard!r}]: {stale}"
