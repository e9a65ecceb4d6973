"""Imports flow one way (docs/architecture.md): no circle among patchlab's modules, counting imports inside functions,
no module imports from a layer above its own, and nothing outside `patchlab.models` names a model family."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "patchlab"
# Each layer may import from its own and the layers before it (module name prefixes, first match wins).
LAYERS = [
    ("foundations", ["vocabulary", "errors", "io", "outdir", "regions", "metrics", "stats", "cache", "report"]),
    ("data", ["data"]),
    ("models", ["hooks", "models", "mini", "backends", "record", "corrupt", "preflight", "provenance", "variants"]),
    (
        "methods",
        [
            "patching",
            "lens",
            "tuned",
            "steering",
            "grounding",
            "enrich",
            "probe",
            "screen",
            "findings",
            "verdicts",
            "answer",
            "journal",
        ],
    ),  # fmt: skip
    ("analyses", ["analyses", "experiment"]),  # one module per analysis, and the config schema built from them
    ("runs", ["runner", "executors", "compare", "replicate", "kept", "check"]),
    ("commands", ["cli"]),
]
FAMILY_FREE = {"base", "registry", "tiny", "generic", "memo", "remote", "transcript", "features", "__init__"}


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _graph() -> dict[str, set[str]]:
    """module -> the patchlab modules it imports anywhere in its body (functions included); "" is the package."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        tree = ast.parse(path.read_text())
        hints = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test) ==
                 "TYPE_CHECKING" for n in ast.walk(block)}  # imports for type hints only: no runtime edge  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in hints:
                continue
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
                for target in [".".join(base)] + [".".join([*base, a.name]) for a in node.names]:
                    if target in mods and target != name and target:
                        graph[name].add(target)
            elif isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for n in names:
                    if n and n.startswith("patchlab.") and n[9:] in mods:
                        graph[name].add(n[9:])
    return graph


def _layer(module: str) -> int:
    for i, (_, prefixes) in reversed(list(enumerate(LAYERS))):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"patchlab.{module} belongs to no layer: add it to LAYERS and docs/architecture.md")


def test_no_import_circle():
    graph, index, low, stack, on, circles = _graph(), {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


def test_no_module_imports_from_a_layer_above_its_own():
    graph = _graph()
    up = [f"{m} ({LAYERS[_layer(m)][0]}) -> {t} ({LAYERS[_layer(t)][0]})" for m in graph if m
          for t in graph[m] if t and _layer(t) > _layer(m)]  # fmt: skip
    assert up == []


def test_only_the_models_layer_names_a_model_family():
    families = {m for m in _modules() if m.startswith("models.") and m.split(".")[-1] not in FAMILY_FREE}
    assert {"models.qwen2_audio", "models.desta2", "models.mini"} <= families
    naming = {m: sorted(graph & families) for m, graph in _graph().items()
              if not m.startswith(("models", "mini")) and graph & families}  # fmt: skip
    assert naming == {}


def test_the_vocabulary_loads_without_torch():
    """The names configs choose from are a light module (the schema itself is built from the analyses' modules)."""
    code = "import sys, patchlab.vocabulary; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
