"""The public API (`ntk/__init__.py`): what it exports, where from, and its README table."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import ntk

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_public_name_is_its_defining_modules_object():
    for name in ntk.__all__:
        module = importlib.import_module(ntk._EXPORTS[name])
        assert getattr(ntk, name) is getattr(module, name), name
        defined_in = getattr(getattr(module, name), "__module__", module.__name__)
        assert defined_in == module.__name__, f"{name} is defined in {defined_in}"


def test_readme_table_lists_exactly_the_public_api():
    text = README.read_text(encoding="utf-8")
    section = text.split("### The public API", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    listed = [n for row in rows for n in re.findall(r"`(\w+)`", row.split("|")[2])]
    assert sorted(listed) == ntk.__all__
    assert len(listed) == len(set(listed))


def test_the_headline_tools_are_public_and_plumbing_is_not():
    for name in ("coord_check", "lr_sweep", "SpectralMonitor", "DynamicLR", "GPT", "gpt_recipe"):
        assert name in ntk.__all__
    for name in ("ACTIVATIONS", "get_activation", "Kernels"):
        assert name not in ntk.__all__
        with pytest.warns(FutureWarning, match=f"ntk.{name} is no longer public API"):
            getattr(ntk, name)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        ntk.nope  # noqa: B018
