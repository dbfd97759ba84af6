"""The environment and the package metadata: what a user installs must be what we test."""

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _locked() -> dict[str, str]:
    """name -> exact version from requirements.txt (the verified lock)."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
    return pins


def test_transformers_imports_in_pinned_environment():
    # A broken torchvision (PyPI's build beside the CPU torch) makes `import transformers` fail.
    code = (
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "m = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))\n"
        "print(sum(p.numel() for p in m.parameters()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 0


def test_torchvision_absent_or_importable():
    if importlib.util.find_spec("torchvision") is None:
        return
    out = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"torchvision is installed but broken: {out.stderr[-500:]}"


@pytest.mark.parametrize(
    "requirement",
    PYPROJECT["project"]["dependencies"]
    + [r for extra in PYPROJECT["project"]["optional-dependencies"].values() for r in extra],
)
def test_lock_satisfies_declared_ranges(requirement):
    """Every declared dependency is pinned in requirements.txt, inside the declared range."""
    req = Requirement(requirement)
    pins = _locked()
    name = canonicalize_name(req.name)
    assert name in pins, f"{req.name} is declared in pyproject.toml but not locked"
    assert req.specifier.contains(pins[name], prereleases=True), (
        f"locked {req.name}=={pins[name]} is outside the declared range {req.specifier}"
    )
    for extra in req.extras:  # e.g. dask[distributed]
        if extra == "distributed":
            assert "distributed" in pins


def test_no_torchvision_in_lock():
    assert "torchvision" not in _locked()


def test_one_repository_url():
    """The URL in pyproject is the one the README and the notebooks' Colab cells install from."""
    url = PYPROJECT["project"]["urls"]["Repository"]
    assert url in (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "notebooks").glob("*.py")):
        urls = set(re.findall(r"git\+(https://[^\s\"']+)", nb.read_text()))
        assert urls <= {url}, f"{nb.name} installs from {urls}, pyproject says {url}"


def test_jupyterlab_runs_from_the_lock():
    """`jupyter lab` (the README's first step) is in the lock and starts: its version is the
    pinned one, and its own dependencies are pinned too (`pip check` finds none missing)."""
    pins = _locked()
    assert "jupyterlab" in pins
    out = subprocess.run(
        [sys.executable, "-m", "jupyterlab", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == pins["jupyterlab"]
    check = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300
    )
    missing = [
        line
        for line in check.stdout.splitlines()
        if "which is not installed" in line and "torchvision" not in line and "wheel" not in line
    ]
    assert not missing, missing
    assert "jupyter lab notebooks/01_" in (ROOT / "README.md").read_text()


def _colab():
    spec = importlib.util.spec_from_file_location("colab", ROOT / ".ci" / "colab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distribution_name_and_one_place_for_the_colab_repository():
    """The distribution is ntk-lab (PyPI's `ntk` is another project), the import name ntk;
    every notebook's Colab cell is the one `.ci/colab.py` writes, with that name."""
    colab = _colab()
    assert PYPROJECT["project"]["name"] == colab.DISTRIBUTION == "ntk-lab"
    assert colab.stale() == []
    assert len(colab.notebooks()) == 16
    for path in colab.notebooks():
        text = path.read_text(encoding="utf-8")
        assert text.count("git+") == 1, path.name  # no second, hand-written address
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install ." in readme and "`ntk-lab`" in readme
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()
