"""The error boundary of every command line (ntk.errors): a user error is one line on stderr
and exit status 2, without a traceback (unless --debug or NTK_DEBUG=1); a bug keeps its
traceback. Run through `subprocess`, as a user runs them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ntk.errors import InvalidValue, UserError, is_user_error, run_cli, user_input

ROOT = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "NTK_DEBUG"}
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**base, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def run(*args: str, cwd: Path | None = None, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env(**extra),
    )


def user_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Assert exit 2, one line on stderr holding every fragment, no traceback; the line."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_chapter_scripts_and_modules(tmp_path):
    afile = tmp_path / "afile"
    afile.touch()
    script = str(ROOT / "ntk" / "ntk_properties.py")
    user_error(run(script, "--widths", "0", "--out", str(tmp_path)), "width must be >= 1, got 0")
    user_error(run(script, "--widths", "x"), "argument --widths: invalid int value: 'x'")
    done = run("-m", "ntk.chapters.lazy_regime", "--out", str(afile))
    user_error(done, f"--out {str(afile)!r} is a file")


def test_bench_arguments():
    done = run(str(ROOT / "bench" / "run.py"), "--only", "nope")
    user_error(done, "argument --only: invalid choice: 'nope'", "python bench/run.py --help")
    for script in ("lm.py", "dynamic_lr.py"):
        user_error(run(str(ROOT / "bench" / script), "--rounds", "0"), "--rounds must be >= 1")
    for script in ("lm.py", "dynamic_lr.py", "muon.py"):
        done = run(str(ROOT / "bench" / script), "--nope")
        user_error(done, "unrecognized arguments: --nope", f"python bench/{script} --help")


# ---- the mechanism, in process ---------------------------------------------------------------------
def test_user_input_marks_without_changing_the_type():
    with pytest.raises(FileNotFoundError) as info, user_input():
        open("/nonexistent/file")
    assert is_user_error(info.value)
    with pytest.raises(KeyError) as info, user_input():
        {}["k"]
    assert not is_user_error(info.value)  # not one of the input errors: a bug
    assert is_user_error(InvalidValue("x")) and isinstance(InvalidValue("x"), ValueError)
    assert not is_user_error(ValueError("x"))


def test_run_cli_exit_codes(capsys, monkeypatch):
    monkeypatch.delenv("NTK_DEBUG", raising=False)

    def fails(argv):
        raise UserError("bad value\n  of x")

    with pytest.raises(SystemExit) as info:
        run_cli(fails, [], prog="p")
    assert info.value.code == 2
    assert capsys.readouterr().err == "p: error: bad value of x\n"
    with pytest.raises(SystemExit) as info:
        run_cli(lambda argv: None, [])
    assert info.value.code == 0
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda argv: 1 / 0, [])
