"""The import direction of docs/architecture.md, checked on the source: compat imports no
project code; the core imports only compat; apps import the core and `messaging`, never each
other otherwise and never the gateway; only the composition root imports the gateway; and the
packages form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("messaging", "receipts", "streaming", "assistants")


def package_of(module: str) -> str | None:
    """The package a module belongs to, in the architecture's terms."""
    parts = module.split(".")
    if parts[0] in APPS:
        return parts[0]
    if parts[0] == "aiim_project":
        if len(parts) > 1 and parts[1] in ("core", "compat", "gateway"):
            return f"aiim_project.{parts[1]}"
        return "aiim_project"
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every project module `path` imports, at any depth of the file (lazy imports too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if package_of(m) is not None}


def source_files():
    for top in ("aiim_project", *APPS):
        for path in (ROOT / top).rglob("*.py") if (ROOT / top).is_dir() else ():
            rel = path.relative_to(ROOT).parts
            if "tests" in rel or "migrations" in rel or "management" in rel:
                continue
            yield path


EDGES = {path: imports_of(path) for path in source_files()}


def imported_packages(path: Path) -> set[str]:
    own = package_of(module_name(path))
    return {package_of(m) for m in EDGES[path]} - {own, None}


def files_of(package: str) -> list[Path]:
    return [p for p in EDGES if package_of(module_name(p)) == package]


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("aiim_project.compat", set()),
        ("aiim_project.core", {"aiim_project.compat"}),
        ("messaging", {"aiim_project.core", "aiim_project.compat"}),
        ("receipts", {"aiim_project.core", "aiim_project.compat", "messaging"}),
        ("streaming", {"aiim_project.core", "aiim_project.compat", "messaging"}),
        ("assistants", {"aiim_project.core", "aiim_project.compat", "messaging", "streaming"}),
    ],
)
def test_a_package_imports_only_what_lies_below_it(package, allowed):
    for path in files_of(package):
        assert imported_packages(path) <= allowed, (path, imported_packages(path) - allowed)


def test_only_the_composition_root_imports_the_gateway():
    importers = {module_name(p) for p in EDGES if "aiim_project.gateway" in imported_packages(p)}
    assert importers == {"aiim_project.wiring"}


def test_the_packages_form_no_cycle():
    graph: dict[str, set[str]] = {}
    for path in EDGES:
        graph.setdefault(package_of(module_name(path)), set()).update(imported_packages(path))
    done: set[str] = set()

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, f"import cycle: {' -> '.join((*trail, node))}"
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, (*trail, node))
        done.add(node)

    for node in graph:
        visit(node, ())


def test_the_check_sees_the_imports_it_guards():
    """The rules above would pass on an empty graph: make sure they read real edges."""
    consumer = ROOT / "aiim_project" / "gateway" / "consumer.py"
    assert "aiim_project.core.frames" in EDGES[consumer]
    assert "messaging" in imported_packages(ROOT / "aiim_project" / "gateway" / "subscriptions.py")
