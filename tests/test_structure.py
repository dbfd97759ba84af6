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
    # the only other GPT(...) is the meta-device base model the engine reads widths from
    assert sorted(builders) == ["ntk/lm/parametrize.py:base_model", *recipes]
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
