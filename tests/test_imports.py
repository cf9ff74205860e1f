"""Imports run one way, bottom to top (docs/architecture.md): the package's import graph, with the imports
inside functions counted too, has no cycle and no arrow from a lower layer to a higher one."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "genlab"

# lowest first; a module may import from its own layer and the ones below it
LAYERS = [
    ["genlab.errors", "genlab.version"],
    ["genlab.config"],
    ["genlab.runs", "genlab.imageio", "genlab.audioio", "genlab.musicio", "genlab.videoio", "genlab.provenance"],
    ["genlab.data"],
    ["genlab.models"],
    ["genlab.registry"],
    ["genlab.adapt"],     # a run started from another: its base's weights, LoRA (the kinds' prepare reads its base)
    ["genlab.prepare", "genlab.kinds.image.prepare", "genlab.kinds.text.prepare",    # each kind's data for a family
     "genlab.kinds.audio.prepare", "genlab.kinds.music.prepare", "genlab.kinds.music.compose",
     "genlab.kinds.music.roll", "genlab.kinds.video.prepare", "genlab.kinds.imagepairs.prepare"],
    ["genlab.loading"],   # below training: a resume reads the run's config as any reader does
    ["genlab.training", "genlab.derive", "genlab.compress"],   # runs made by training, merging or compressing
    ["genlab.kinds.image.imagegen", "genlab.kinds.text.textgen"],
    ["genlab.evaluation", "genlab.kinds.image.judge", "genlab.kinds.image.evaluate", "genlab.kinds.text.evaluate",
     "genlab.kinds.audio.judge", "genlab.kinds.audio.evaluate", "genlab.kinds.music.evaluate",
     "genlab.kinds.video.judge", "genlab.kinds.video.evaluate", "genlab.kinds.image.augment_report",
     "genlab.kinds.image.augment", "genlab.kinds.imagepairs.evaluate"],
    ["genlab.serve.schemas", "genlab.serve.served", "genlab.serve.batching"],   # what the kinds' routes build on
    ["genlab.kinds"],     # the kinds' declarations, their routes, and the table of kinds
    ["genlab.api", "genlab"],   # `genlab` is the package's __init__: the API facade
    ["genlab.card", "genlab.export", "genlab.serve", "genlab.cli_augment", "genlab.cli", "genlab.__main__"],
]

def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the genlab modules it imports (anywhere in the file). `from pkg import name` is an arrow
    to pkg.name when that is a module, else to pkg (whose __init__ runs)."""
    mods = modules()
    graph = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target.startswith("genlab") and target != mod:
                    graph[mod].add(target)
    return graph


def layer(mod: str) -> int:
    best = None
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if mod == prefix or mod.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    if best is None:
        raise AssertionError(f"{mod} is in no layer of LAYERS; add it where it belongs")
    return best[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer(b) > layer(a))


def test_every_module_has_a_layer():
    for mod in modules():
        layer(mod)


def test_imports_have_no_cycle():
    assert cycles(import_graph()) == []


def test_no_import_runs_up_the_layers():
    assert upward(import_graph()) == []


@pytest.mark.parametrize("arrow", [("genlab.data.images", "genlab.kinds.image.judge"),
                                   ("genlab.runs", "genlab.api")])
def test_the_checks_catch_an_upward_arrow_and_a_cycle(arrow):
    graph = import_graph()
    a, b = arrow
    graph[a].add(b)
    assert f"{a} -> {b}" in upward(graph)
    assert any(a in group and b in group for group in cycles(graph))
