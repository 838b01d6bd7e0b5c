"""The library reads in the order data flows: no module imports one that stands later in the flow
(imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import saeembed

# The flow, first to last; a module may import its own stage and the ones before it.
STAGES = [
    ("errors", "settings", "hashing", "atomic", "outputs", "export", "jsonfile"),  # foundations
    ("store", "spans", "summary", "synthetic"),  # the store format, and where evidence sits in it
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
