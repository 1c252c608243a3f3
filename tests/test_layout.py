"""The package's import graph: no cycles, and no module imports upwards.

Every import of a vmap_core module, at module level or inside a function, is
read from the sources (.py by their syntax tree, .pyx by its import lines).
Layers, lowest first; a module may import only from its own layer or below,
and never in a circle.  A new module must be given a layer here.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

SRC = pathlib.Path(__file__).resolve().parent.parent / "src" / "vmap_core"

LAYERS = [
    # 0: leaves that import nothing of the package
    {"vmap_core.types", "vmap_core._errors", "vmap_core._testhooks", "vmap_core._version",
     "vmap_core.freetree", "vmap_core._traceparse", "vmap_core.anchors", "vmap_core.measure"},
    # 1: the kernel's versions and its trace format
    {"vmap_core.profiles", "vmap_core.trace"},
    # 2: the oracle, and the kernel's formats that the core's constructors read
    {"vmap_core.reference", "vmap_core.kernel", "vmap_core.kernel.vmallocinfo"},
    # 3: the Cython core
    {"vmap_core._space"},
    # 4: the public API
    {"vmap_core"},
    # 5: what runs on a space: the kernel's scenarios, trace replay, experiments, pictures
    # and the conformance kit (it drives a user's space against the reference)
    {"vmap_core.kernel.scenarios", "vmap_core.kernel.driver", "vmap_core.replay",
     "vmap_core.usercopy", "vmap_core.usercopy_python", "vmap_core.seed",
     "vmap_core.addrmap", "vmap_core.testing", "vmap_core.testing.strategies",
     "vmap_core.testing._compare", "vmap_core.testing.contract"},
    # 6: what every command shares
    {"vmap_core.cli.common"},
    # 7: one module per command
    {"vmap_core.cli.usercopy", "vmap_core.cli.info", "vmap_core.cli.map",
     "vmap_core.cli.scenarios", "vmap_core.cli.replay"},
    # 8: the command line's entry points
    {"vmap_core.cli", "vmap_core.__main__"},
]
LAYER = {m: i for i, layer in enumerate(LAYERS) for m in layer}

#: Imports that go up, each with its reason.  Nothing else may.
UPWARD = {
    ("vmap_core.kernel.vmallocinfo", "vmap_core._space"):
        "load()'s default space class, imported when no cls is given",
}


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(importer: str, is_package: bool, level: int, target: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level:
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([target] if target else []))
    return target or ""


def imports_of(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The vmap_core modules a source file imports (anywhere in it).  ``from P
    import m`` imports the module P.m where there is one, else names of P;
    the parent packages that Python runs on the way are not counted."""
    me = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(base: str, names: list[str]) -> None:
        for n in names:
            found.add(f"{base}.{n}" if f"{base}.{n}" in modules else base)

    if path.suffix == ".pyx":
        for m in re.finditer(r"^\s*from\s+(\.*)([\w.]*)\s+c?import\s+([\w, ]+)",
                             path.read_text(), re.M):
            level, target = len(m[1]), m[2] or None
            if level or (target or "").startswith("vmap_core"):
                add(resolve(me, is_package, level, target),
                    [n.split(" as ")[0].strip() for n in m[3].split(",")])
        return found
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level or (node.module or "").startswith("vmap_core"):
                add(resolve(me, is_package, node.level, node.module),
                    [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vmap_core"))
    return found


def graph() -> dict[str, set[str]]:
    sources = [p for p in SRC.rglob("*") if p.suffix in (".py", ".pyx")]
    modules = {module_name(p): p for p in sources}
    return {name: {m for m in imports_of(path, set(modules)) if m in modules and m != name}
            for name, path in modules.items()}


def test_every_module_has_a_layer():
    missing = sorted(set(graph()) - set(LAYER))
    assert not missing, f"give these modules a layer in tests/test_layout.py: {missing}"


def test_no_module_imports_upwards():
    up = [(a, b) for a, targets in graph().items() for b in targets
          if LAYER[b] > LAYER[a] and (a, b) not in UPWARD]
    assert not up, f"upward imports: {up}"


def test_no_import_cycles():
    g = {a: {b for b in t if (a, b) not in UPWARD} for a, t in graph().items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def test_commands_share_only_common():
    """A command module imports no other command, nor the cli package itself."""
    g = graph()
    commands = LAYERS[7]
    for c in commands:
        assert not (g[c] & (commands | {"vmap_core.cli"})), (c, g[c])
    assert not (g["vmap_core.cli.common"] & commands)


def test_the_kit_imports_no_core_and_no_cli():
    """vmap_core.testing needs only the reference and the errors: it never
    imports the Cython core (a user's space is tested without it) nor the
    command line."""
    g = graph()
    kit = {m for m in g if m.startswith("vmap_core.testing")}
    assert kit == {m for m in LAYERS[5] if m.startswith("vmap_core.testing")}
    reach = set().union(*(g[m] for m in kit)) - kit
    assert reach <= {"vmap_core._errors", "vmap_core.reference"}, reach


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The graph is read, not assumed: a planted upward import is caught."""
    fake = tmp_path / "vmap_core"
    for p in SRC.rglob("*.py"):
        dest = fake / p.relative_to(SRC)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(p.read_text())
    (fake / "_space.pyx").write_text("from .cli import main\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    with pytest.raises(AssertionError, match="vmap_core._space', 'vmap_core.cli'"):
        test_no_module_imports_upwards()
