"""One place per mechanism, checked on the source: one GPT recipe, one parametrization registry.

These walk the package's syntax trees (not grep on text: comments and docstrings do not count).
"""

from __future__ import annotations

import ast
from pathlib import Path

from ntk import registry

PACKAGE = Path(__file__).resolve().parents[1] / "ntk"
NAMES = set(registry.ALL) | set(registry.ALIASES)


def modules() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(PACKAGE.parent)): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def called(node: ast.AST) -> set[str]:
    """Names of the functions called inside `node` (f(...) and x.f(...))."""
    out = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            f = call.func
            out.add(f.id if isinstance(f, ast.Name) else getattr(f, "attr", ""))
    return out


def test_one_gpt_recipe_builds_every_trained_gpt():
    """A function that builds a GPT (`GPT(...)` on a real device) and parametrizes it is a
    recipe: there is exactly one, `ntk.lm.parametrize.gpt_recipe`, and the trainer, the sweeps
    and the chapters call it."""
    recipes, builders = [], []
    for path, tree in modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and "GPT" in called(fn):
                builders.append(f"{path}:{fn.name}")
                if "parametrize" in called(fn):
                    recipes.append(f"{path}:{fn.name}")
    assert recipes == ["ntk/lm/parametrize.py:gpt_recipe"]
    # the only other GPT(...)s: the meta-device base model the engine reads widths from, and
    # the plain GPT a Hugging Face checkpoint is read into (no parametrization, no optimizer)
    assert sorted(builders) == [
        "ntk/lm/hf.py:gpt_from_neox",
        "ntk/lm/parametrize.py:base_model",
        *recipes,
    ]
    users = {
        p
        for p, tree in modules().items()
        if any(isinstance(n, ast.FunctionDef) and "gpt_recipe" in called(n) for n in ast.walk(tree))
    }
    assert users == {
        "ntk/lm/config.py",
        "ntk/lm/transfer.py",
        "ntk/chapters/depth.py",
        "ntk/chapters/dynamic_learning_rates.py",
    }


def _name_literals(node: ast.AST | None) -> list[str]:
    """The parametrization names in a literal tuple, list, set or dict's keys."""
    if isinstance(node, ast.Dict):
        elts = node.keys
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        elts = node.elts
    else:
        return []
    return [e.value for e in elts if isinstance(e, ast.Constant) and e.value in NAMES]


def test_one_parametrization_registry():
    """Parametrization names are listed as a set of valid choices in one module only
    (`ntk.registry`); everywhere else subsets come from `registry.select` (checked there)."""
    definitions, inline_checks = [], []
    for path, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and _name_literals(node.value):
                found = node.targets if isinstance(node, ast.Assign) else [node.target]
                targets = [t.id for t in found if isinstance(t, ast.Name)]
                if any("PARAMETRIZATION" in t or t.endswith("_RULES") for t in targets):
                    definitions.append(f"{path}:{targets[0]}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                "check_parametrization",
                "check_choice",
            ):
                if any(_name_literals(arg) for arg in node.args):
                    inline_checks.append(f"{path}:{node.lineno}")
    assert definitions == ["ntk/registry.py:WIDTH_RULES", "ntk/registry.py:DEPTH_RULES"]
    assert inline_checks == []
    assert tuple(registry.DEPTH_RULES) == ("depth-mup", "completep")
    assert registry.select("mup", "sp") == ("mup", "sp")  # the caller's order
    for bad in [("sp", "muP"), ()]:
        try:
            registry.select(*bad)
        except ValueError as err:
            assert "parametrizations must be names from" in str(err)
        else:
            raise AssertionError(f"select{bad} should fail")


# ---- imports ----------------------------------------------------------------------------------
def _module_name(path: str) -> str:
    parts = path[: -len(".py")].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks (never executed)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def import_edges(annotations: bool = False) -> dict[str, dict[str, list[tuple[int, bool]]]]:
    """module -> {imported ntk module: [(line, at module level)]}; imports under
    `if TYPE_CHECKING:` count only with `annotations`.

    `from a.b import c` counts as an import of a.b.c when that is a module, else of a.b.
    """
    trees = modules()
    names = {_module_name(p) for p in trees}
    edges: dict[str, dict[str, list[tuple[int, bool]]]] = {}
    for path, tree in trees.items():
        me = _module_name(path)
        skip = set() if annotations else _type_checking_nodes(tree)
        top = {id(n) for n in tree.body}
        out = edges.setdefault(me, {})
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(me.split(".")[: -node.level] + ([base] if base else []))
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names
                ]
            for t in targets:
                if t.split(".")[0] == "ntk" and t != me:
                    out.setdefault(t, []).append((node.lineno, id(node) in top))
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's first appearance in a depth-first search (enough to show one)."""
    found, state, stack = [], {}, []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                found.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


# A package's __init__ that re-exports its submodules is not a dependency of those submodules:
# `ntk.scaling` importing `ntk.scaling.parametrization` is the package listing its parts.
def _without_package_reexports(edges) -> dict[str, set[str]]:
    return {
        m: {t for t in targets if not (t.startswith(m + ".") and m.count(".") < t.count("."))}
        for m, targets in edges.items()
    }


# The lazy back-references allowed: the deprecated `param.enable_dynamic_lr` (one release), and
# stax's `Layer.module/kernels/diag`, the public reading of a description, which call the
# network evaluator that itself builds on `Layer` (to remove: move those entry points out)
DEPRECATED_LAZY = {
    ("ntk.scaling._old_dynamic_lr", "ntk.scaling.dynamic_lr"),
    ("ntk.kernels.stax.base", "ntk.kernels.stax.network"),
}


def test_the_package_imports_have_no_circle():
    """Every import inside `ntk` (module level and inside functions, not under TYPE_CHECKING)
    forms an acyclic graph once package __init__ re-exports are set aside."""
    edges = import_edges()
    graph = _without_package_reexports(edges)
    for src, dst in DEPRECATED_LAZY:
        assert all(not top for _, top in edges[src][dst]), "must stay a lazy import"
        graph[src].discard(dst)
    assert _cycles(graph) == []
    # the old circle: Parametrization <- DynamicLRMixin -> parametrization; now one direction
    assert "ntk.scaling.parametrization" in graph["ntk.scaling.dynamic_lr"]
    # with annotation-only imports too, the one circle left is chapter 02's figure helper
    # reading its chapter's result types (outside the library layers)
    typed = _without_package_reexports(import_edges(annotations=True))
    for src, dst in DEPRECATED_LAZY:
        typed[src].discard(dst)
    figures = ["ntk.chapters._ntk_figures", "ntk.chapters.neural_tangent_kernel"]
    assert _cycles(typed) == [[*figures, figures[0]]]


def test_lm_imports_from_defining_modules_and_bottom_floor_is_shared():
    """`ntk.lm` never imports through the lazy top-level `ntk` (invisible to import graphs);
    `scaling` and `models` do not reach into `training` for its error, nor `models` into
    `kernels` for activations: both live on the bottom floor (`ntk.errors`, `ntk.activations`)."""
    edges = import_edges()
    through_top = sorted(
        f"{m}:{line}"
        for m, targets in edges.items()
        if m.startswith("ntk.lm")
        for t, hits in targets.items()
        if t == "ntk"
        for line, _ in hits
    )
    assert through_top == []
    for layer, forbidden in [
        ("ntk.scaling", "ntk.training"),
        ("ntk.models", "ntk.training"),
        ("ntk.models", "ntk.kernels"),
    ]:
        bad = sorted(
            f"{m} -> {t}"
            for m, targets in edges.items()
            if m.startswith(layer)
            for t in targets
            if t.startswith(forbidden)
        )
        assert bad == [], bad
    bottom = ("ntk.errors", "ntk.activations", "ntk.registry")
    for m in bottom:
        assert set(edges[m]) <= {"ntk._checks", *bottom}, (m, edges[m])
    assert not (PACKAGE / "lm" / "logging.py").exists()  # shadowed the standard library's name
