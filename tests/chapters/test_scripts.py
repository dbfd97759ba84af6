"""The chapters run as `python -m ntk.chapters.<name>` end to end at tiny sizes, write their
figures and print a summary; their `main` functions answer --help and return their results;
the old script names (ntk/<old>.py, cited by the README and issues) are aliases of them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ntk.chapters import (
    gaussian_processes,
    lazy_regime,
    mup_feature_learning,
    neural_tangent_kernel,
)

ROOT = Path(__file__).resolve().parents[2]

SCRIPTS = {  # tiny sizes: seconds per chapter
    "gaussian_processes": "--widths 8 16 --members 64".split(),
    "neural_tangent_kernel": "--widths 16 32 --train-widths 16 32 --width 64".split(),
    "lazy_regime": "--widths 16 32 --steps 10".split(),
    "mup_feature_learning": (
        "--widths 10 20 --seeds 0 1 --steps 20 --n-train 256 --compare-width 20".split()
    ),
}
ALIASES = {  # old script name -> chapter
    "gaussian_process_demo": "gaussian_processes",
    "ntk_properties": "neural_tangent_kernel",
    "feature_learning_limitations": "lazy_regime",
    "feature_learning_mup": "mup_feature_learning",
    "depth_transfer": "depth",
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_writes_figures(script, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        f"ntk.chapters.{script}",
        *SCRIPTS[script],
        "--out",
        str(tmp_path),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = list(tmp_path.glob("*.png"))
    assert pngs, f"{script} wrote no figure"
    assert all(p.stat().st_size > 10_000 for p in pngs)
    assert proc.stdout.strip(), f"{script} printed no summary"


def test_mup_summary_ends_with_the_checked_claims(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "ntk" / "feature_learning_mup.py"),  # the README's main job, old name
        *SCRIPTS["mup_feature_learning"],
    ]
    proc = subprocess.run(
        [*cmd, "--out", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith(("PASS: ", "FAIL: "))
    assert {p.name for p in tmp_path.glob("*.png")} >= {
        "feature_learning_mup.png",
        "mup_vs_standard_comparison.png",
    }


@pytest.mark.parametrize(
    "module", [gaussian_processes, neural_tangent_kernel, lazy_regime, mup_feature_learning]
)
def test_main_has_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--widths" in capsys.readouterr().out


def test_main_returns_its_results(tmp_path):
    argv = [*SCRIPTS["lazy_regime"], "--out", str(tmp_path)]
    results = lazy_regime.main(argv)
    assert set(results) == {"lazy"}
    assert list(results["lazy"].table.width) == [16, 32]
    assert (tmp_path / "03_lazy_regime.png").stat().st_size > 10_000


@pytest.mark.parametrize("alias", ALIASES)
def test_old_script_names_are_aliases_of_the_chapters(alias):
    def run(*cmd):
        proc = subprocess.run(
            [sys.executable, *cmd, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.split("\n\n", 1)[1]  # after the usage lines (they name the prog)

    assert run(str(ROOT / "ntk" / f"{alias}.py")) == run("-m", f"ntk.chapters.{ALIASES[alias]}")
