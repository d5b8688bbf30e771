"""The package layout's rules, read from the source with ast (imports anywhere in a module, function bodies included):
the flow suite → runs → store → analysis → report → gate, with the command line on top.

- kernels/ depends on nothing of ours;
- ablations/ knows only harness' config and errors;
- reports/ reads the store and the analysis, never the command line, training or ablations;
- the harness core (everything in harness/ but harness/cli/) never imports reports/, ablations/ or the command line;
- only harness/cli/ parses arguments;
- no two modules import each other, directly or around a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder → installed package (pyproject.toml's package-dir): harness/ is mupbench itself
PACKAGES = {"harness": "mupbench", "ablations": "mupbench.ablations", "kernels": "mupbench.kernels",
            "reports": "mupbench.reports"}
SUBPACKAGES = ("mupbench.ablations", "mupbench.kernels", "mupbench.reports")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (a submodule if there is one, else its package). Importing a
    submodule runs its packages' __init__ too; that is Python's doing, not a dependency the code chose."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every module of ours that `module` imports, and every third-party top-level package (prefixed "ext:")."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or else a name in `base`
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                out.add(target)
            elif target is None and name:
                out.add("ext:" + name.split(".")[0])
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(sources, allowed) -> list[str]:
    return [f"{m} imports {t}" for m in MODULES if _in(m, *sources) for t in sorted(GRAPH[m])
            if not t.startswith("ext:") and not allowed(m, t)]


def test_the_walker_sees_the_imports_it_judges():
    assert "mupbench.store" in GRAPH["mupbench.reports.sweep"]
    assert "mupbench.config" in GRAPH["mupbench.ablations.presets"]
    assert "mupbench.cli.args" in GRAPH["mupbench.cli.run"]
    assert "ext:argparse" in GRAPH["mupbench.cli.args"]


def test_kernels_depend_on_nothing_of_ours():
    assert _violations(["mupbench.kernels"], lambda m, t: _in(t, "mupbench.kernels")) == []


def test_ablations_know_only_the_config():
    allowed = ("mupbench.ablations", "mupbench.config", "mupbench.errors")
    assert _violations(["mupbench.ablations"], lambda m, t: _in(t, *allowed)) == []


def test_reports_read_the_store_and_the_analysis_only():
    allowed = ("mupbench.reports", "mupbench.errors", "mupbench.store", "mupbench.transfer", "mupbench.expectations", "mupbench.config")
    assert _violations(["mupbench.reports"], lambda m, t: _in(t, *allowed)) == []


def test_the_harness_core_never_reaches_up():
    core = [m for m in MODULES if not _in(m, *SUBPACKAGES, "mupbench.cli")]
    bad = [f"{m} imports {t}" for m in core for t in sorted(GRAPH[m])
           if _in(t, "mupbench.reports", "mupbench.ablations", "mupbench.cli")]
    assert bad == []


def test_only_the_command_line_parses_arguments():
    assert [m for m in MODULES if "ext:argparse" in GRAPH[m] and not _in(m, "mupbench.cli")] == []


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in MODULES:
                continue
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
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize("rule, planted", [
    (test_kernels_depend_on_nothing_of_ours, ("mupbench.kernels.bench", "mupbench.model")),
    (test_reports_read_the_store_and_the_analysis_only, ("mupbench.reports.sweep", "mupbench.cli")),
    (test_the_harness_core_never_reaches_up, ("mupbench.gate", "mupbench.reports.junit")),
    (test_no_import_cycles, ("mupbench.config", "mupbench.store")),
])
def test_each_rule_fails_on_a_planted_import(rule, planted, monkeypatch):
    module, target = planted
    monkeypatch.setitem(GRAPH, module, GRAPH[module] | {target})
    with pytest.raises(AssertionError):
        rule()
