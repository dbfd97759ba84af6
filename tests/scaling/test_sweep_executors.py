"""Sweeps on other executors: any concurrent.futures.Executor, and a real dask.distributed
cluster (scheduler and two worker processes over loopback) whose results flow back to the
database in this process."""

import concurrent.futures as cf
import os

import pandas as pd
import pytest

from ntk.scaling.sweep import lr_sweep
from ntk.scaling.sweep_store import SweepStore, load_sweep
from tests.scaling.sweep_helpers import GRID, expected_table, fail_on_width_64, where_run


def test_any_concurrent_futures_executor(tmp_path):
    with cf.ThreadPoolExecutor(max_workers=3) as pool:
        df = lr_sweep(
            _quiet,
            **GRID,
            cache=tmp_path / "t.sqlite",
            executor=pool,
            max_in_flight=5,
            progress=False,
        )
        assert not pool._shutdown  # the caller's executor is left running
    pd.testing.assert_frame_equal(df, expected_table())


def _quiet(**cell) -> float:
    from tests.scaling.sweep_helpers import logged_free

    return logged_free(**cell)


@pytest.fixture(scope="module")
def dask_client(tmp_path_factory):
    distributed = pytest.importorskip("distributed")
    log = tmp_path_factory.mktemp("dask") / "pids.log"
    os.environ["SWEEP_LOG"] = str(log)  # inherited by the worker processes
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        env={"SWEEP_LOG": str(log), "OMP_NUM_THREADS": "1"},
    )
    client = distributed.Client(cluster)
    yield client, log
    client.close()
    cluster.close()
    del os.environ["SWEEP_LOG"]


def test_dask_cluster_runs_the_sweep_and_the_driver_keeps_the_database(tmp_path, dask_client):
    client, log = dask_client
    assert client.scheduler.address.startswith("tcp://127.0.0.1")
    db = tmp_path / "dask.sqlite"
    df = lr_sweep(where_run, **GRID, cache=db, executor=client.get_executor(), progress=False)
    pd.testing.assert_frame_equal(df, expected_table())
    pd.testing.assert_frame_equal(load_sweep(db).drop(columns="seconds"), df)
    pids = set(log.read_text().split())
    assert os.getpid() not in {int(p) for p in pids}  # every cell ran on a dask worker
    assert len(pids) == 2  # both workers took cells
    # resumed: nothing left to run, nothing submitted
    again = lr_sweep(where_run, **GRID, cache=db, executor=client.get_executor(), progress=False)
    pd.testing.assert_frame_equal(again, df)
    assert set(log.read_text().split()) == pids and len(log.read_text().split()) == len(df)


def test_an_error_on_a_dask_worker_stops_the_sweep_and_keeps_finished_cells(tmp_path, dask_client):
    client, _ = dask_client
    db = tmp_path / "fail.sqlite"
    with pytest.raises(ArithmeticError, match="cell .* failed"):
        lr_sweep(
            fail_on_width_64,
            **GRID,
            cache=db,
            executor=client.get_executor(),
            max_in_flight=4,
            progress=False,
        )
    with SweepStore(db) as store:
        counts = store.counts()
    assert "claimed" not in counts and 0 < counts["done"] < 60  # claims released
    df = lr_sweep(_quiet, **GRID, cache=db, progress=False)  # resumes without the failure
    pd.testing.assert_frame_equal(df, expected_table())


def test_the_dask_snippet_of_docs_sweeps_runs_as_pasted(tmp_path):
    """docs/sweeps.md's dask block, saved as a script and run: the guard lets the cluster's
    worker processes start (without it: "Nanny failed to start")."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("distributed")
    doc = (Path(__file__).resolve().parents[2] / "docs" / "sweeps.md").read_text()
    section = doc.split("### dask.distributed", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'if __name__ == "__main__":' in code
    (tmp_path / "sweep_dask.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "sweep_dask.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(load_sweep(tmp_path / "sweep.sqlite")) == 6 * 2 * 2 * 2
