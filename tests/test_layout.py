"""The library reads in the order data flows: no module imports one that stands later in the flow
(imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import saeembed

# The flow, first to last; a module may import its own stage and the ones before it.
STAGES = [
    # foundations
    ("errors", "settings", "hashing", "atomic", "outputs", "export", "checked", "ray_runtime", "cache_root"),
    ("store", "stream", "spans", "summary", "synthetic", "form_counts"),  # the store format, read whole or by
    # parts, where evidence sits in it, and the form counts it keeps
    ("sae",),  # SAE files and models
    ("embedding",),  # text -> reader -> SAE -> pooled vectors -> stores
    ("train",),  # SAEs trained on a reader's activations
    ("labels",),  # what latents mean
    ("analysis",),  # diff, correlations, concepts, search, cluster, risk
    ("report",),  # pages of the analyses' results
]
ROOT = Path(saeembed.__file__).parent


def stage_of(module: str) -> int:
    top = module.split(".")[1]
    for index, names in enumerate(STAGES):
        if top in names:
            return index
    raise AssertionError(f"saeembed.{top} is in no stage of the flow; add it to STAGES")


def imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("saeembed."):
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("saeembed.")]
    return out


def test_no_module_imports_a_later_stage():
    backwards = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "__init__.py":
            continue  # the public names, re-exported lazily
        module = "saeembed." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for imported in imports(path):
            if stage_of(imported) > stage_of(module):
                backwards.append(f"{module} imports {imported}")
    assert backwards == []


def test_public_names_resolve():
    for name in saeembed.__all__:
        assert getattr(saeembed, name) is not None, name


def test_the_package_shows_its_names_and_subpackages():
    """`import saeembed` then `saeembed.report.write_diff_report` works as the README shows, and tab
    completion offers the public names, not the module's own imports."""
    import subprocess
    import sys

    code = ("import saeembed; assert callable(saeembed.report.write_diff_report); "
            "names = dir(saeembed); assert 'diff' in names and 'Embedder' in names and 'report' in names; "
            "assert 'import_module' not in names and 'Any' not in names")
    subprocess.run([sys.executable, "-c", code], check=True)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of saeembed and commands it imports (inside functions too). `from pkg import sub`
    is an edge to the submodule, not to the package it sits in."""
    base = ROOT.parent
    modules = {}
    for top in ("saeembed", "commands"):
        for path in (base / top).rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                if len(subs) < len(node.names):
                    subs.add(node.module)
                targets = subs
            elif isinstance(node, ast.Import):
                targets = {a.name for a in node.names}
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_circles():
    """No two modules import each other, directly or through others (a circle makes both one unit to read,
    test and change)."""
    graph = import_graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path
                               else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert circles == []
