"""The house drawn from its imports: no import cycles, and each layer imports only those below.

Module-level imports only: an import inside a function (the entry points' late imports) runs
after every module is loaded and cannot form a cycle at import time.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tf_lvae"
# What each subpackage may import from tf_lvae besides itself (`data` and `experiment_config`
# are the shared base; the entry points, cli and api sit on top of everything).
ALLOWED = {
    "model": set(),
    "data": set(),
    "fast": {"model"},
    "storage": {"model"},
    "training": {"model", "fast", "data", "storage", "evaluation", "experiment_config"},
    "evaluation": {"model", "fast", "data", "storage", "experiment_config"},
    "serving": {"model", "storage", "evaluation", "experiment_config"},
    "tuning": {"model", "data", "storage", "evaluation", "training", "experiment_config"},
    "analysis": {"model", "data", "storage", "evaluation", "training", "experiment_config",
                 "configs"},
}


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path):
    """tf_lvae modules `path` imports at module level (`from tf_lvae.x import y` names x.y
    when y is a module, else x)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tf_lvae"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py")
                names.add(candidate if is_module.exists() else node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("tf_lvae"))
    return names


GRAPH = {_module_name(p): _top_level_imports(p) for p in PACKAGE.rglob("*.py")}


def test_the_graph_is_read_from_every_module():
    assert {"tf_lvae.model.hierarchical_vae", "tf_lvae.training.train_step",
            "tf_lvae.storage.checkpoints"} <= set(GRAPH)
    assert "tf_lvae.model.layers" in GRAPH["tf_lvae.model.hierarchical_vae"]


def test_no_import_cycles():
    state = {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if target not in GRAPH:
                continue
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_subpackages_import_only_the_layers_below(subpackage):
    bad = []
    for module, targets in GRAPH.items():
        if not module.startswith(f"tf_lvae.{subpackage}"):
            continue
        for target in targets:
            layer = target.split(".")[1] if target.count(".") else target
            if layer not in ALLOWED[subpackage] | {subpackage} and target != "tf_lvae":
                bad.append(f"{module} imports {target}")
    assert not bad, "; ".join(bad)
