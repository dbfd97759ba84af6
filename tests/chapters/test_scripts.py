"""The chapter scripts run end to end at tiny sizes, write their figures and print a summary;
their `main` functions answer --help and return their results."""

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

SCRIPTS = {  # tiny sizes: seconds per script
    "gaussian_process_demo": "--widths 8 16 --members 64".split(),
    "ntk_properties": "--widths 16 32 --train-widths 16 32 --width 64".split(),
    "feature_learning_limitations": "--widths 16 32 --steps 10".split(),
    "feature_learning_mup": (
        "--widths 10 20 --seeds 0 1 --steps 20 --n-train 256 --compare-width 20".split()
    ),
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_writes_figures(script, tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "ntk" / f"{script}.py"),
        *SCRIPTS[script],
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = list(tmp_path.glob("*.png"))
    assert pngs, f"{script} wrote no figure"
    assert all(p.stat().st_size > 10_000 for p in pngs)
    assert proc.stdout.strip(), f"{script} printed no summary"


def test_mup_summary_ends_with_the_checked_claims(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "ntk" / "feature_learning_mup.py"),
        *SCRIPTS["feature_learning_mup"],
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
    argv = [*SCRIPTS["feature_learning_limitations"], "--out", str(tmp_path)]
    results = lazy_regime.main(argv)
    assert set(results) == {"lazy"}
    assert list(results["lazy"].table.width) == [16, 32]
    assert (tmp_path / "03_lazy_regime.png").stat().st_size > 10_000
