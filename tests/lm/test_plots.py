"""`--plot DIR` of a sweep's directory overlays its runs; of a run's directory, plots the run."""

import matplotlib
import pytest
import yaml

from ntk.lm.plots import plot_sweep, sweep_runs
from ntk.lm.run_log import read_metrics
from ntk.lm.train import main

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("single_thread")


def test_plot_of_a_sweep_directory_overlays_its_runs(tiny, tmp_path, capsys):
    config = tiny("sweep", **{"train.tokens": 5 * 256, "train.eval_every": 5}).to_dict()
    config["sweep"] = {"optim.lr": [0.01, 0.003]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path)]) == 0
    out = tmp_path / "sweep"
    assert [p.name for p in sweep_runs(out)] == ["lr=0.003", "lr=0.01"]
    fig = plot_sweep(out, smooth=1)
    train_ax, val_ax, lr_ax = fig.axes
    assert [t.get_text() for t in train_ax.get_legend().get_texts()] == ["lr=0.003", "lr=0.01"]
    for i, name in enumerate(["lr=0.003", "lr=0.01"]):  # each line is that run's CSV
        df = read_metrics(out / name)
        assert list(train_ax.lines[i].get_ydata()) == list(df["loss"])
        assert list(val_ax.lines[i].get_ydata()) == list(df["val_loss_max"].dropna())
        assert list(lr_ax.lines[i].get_ydata()) == list(df["lr"])
    capsys.readouterr()
    assert main(["--plot", str(out)]) == 0
    assert (out / "metrics.png").stat().st_size > 0
    assert capsys.readouterr().out == f"wrote {out / 'metrics.png'}\n"
    assert main(["--plot", str(out / "lr=0.01")]) == 0  # one run: its own four panels
    assert (out / "lr=0.01" / "metrics.png").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no run: no metrics.csv in it"):
        main(["--plot", str(tmp_path / "empty")])
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        main(["--plot", str(tmp_path / "absent")])
