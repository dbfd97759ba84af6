"""Run configs: YAML onto dataclasses, errors that name the key, overrides, extends, sweeps."""

from pathlib import Path

import pytest
import yaml

from ntk.lm.config import (
    RunConfig,
    build_config,
    build_model,
    differences,
    load_runs,
    parse_value,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = {"model": {"block_size": 32}, "train": {"tokens": 8192, "tokens_per_step": 1024}}


def write(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_validate(path):
    runs = load_runs(path)
    assert runs
    for _, config in runs:
        assert isinstance(config, RunConfig)
        assert config.train.tokens_per_step % config.schedule.max_block_size == 0


def test_yaml_numbers_strings_and_token_counts():
    assert parse_value("1e-3") == pytest.approx(1e-3)  # YAML 1.1 would read a string
    assert parse_value("3E5") == 3e5 and parse_value("true") is True
    assert parse_value("null") is None and parse_value("cosine") == "cosine"
    config = build_config(SMALL, [("train.tokens", "2M"), ("optim.lr", 1)])
    assert config.train.tokens == 2_000_000
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        (("model.n_embed", 64), ValueError, r"unknown key model\.n_embed .*n_embd"),
        (("optimizer.lr", 1.0), ValueError, r"unknown key optimizer .*optim"),
        (("model.n_embd", 64.0), TypeError, r"model\.n_embd must be int, got 64\.0"),
        (("model.n_head", "4"), TypeError, r"model\.n_head must be int or null"),
        (("ema.enabled", 1), TypeError, r"ema\.enabled must be bool"),
        (("optim.lr", "0.01"), TypeError, r"optim\.lr must be float"),
        (("optim.lr", -1e-3), ValueError, r"optim\.lr must be a finite number > 0"),
        (("ema.beta", 1.0), ValueError, r"ema\.beta must be in \[0, 1\)"),
        (("model.n_embd", 50), ValueError, r"model\.n_embd \(50\) must be a multiple"),
        (("train.tokens", "2Q"), ValueError, r"train\.tokens must be a token count"),
        (("train.tokens_per_step", 1000), ValueError, r"tokens_per_step=1000 must be a multiple"),
        (("parametrization.name", "muq"), ValueError, r"parametrization\.name must be one of"),
        (("parametrization.base_width", 30), ValueError, r"base_width \(30\) must be a multiple"),
        (("optim.decay", "step"), ValueError, r"optim\.decay must be one of"),
        (("train.device", "tpu"), ValueError, r"train\.device must be one of"),
        (("optim.warmup_tokens", 8192), ValueError, r"warmup_tokens \(8192\) must be shorter"),
        (("model", 3), TypeError, r"model must be a mapping"),
    ],
)
def test_bad_values_name_their_key(override, error, message):
    with pytest.raises(error, match=message):
        build_config(SMALL, [override])


def test_schedules_that_do_not_increase_are_refused():
    base = {"train": {"tokens_per_step": 1024}}
    for schedule, message in [
        ("64:2M,32:8M,128:inf", r"block sizes must increase, phase 1 has 32 after 64"),
        ("32:8M,64:2M,128:inf", r"token thresholds must increase, phase 1 ends at 2000000"),
        ("32:2M,64:inf,128:1G", r"only the last phase may run to 'inf'"),
        ("32:2M,64:8M", r"the last phase must run to 'inf'"),
        ("32-2M,64:inf", r"phase 0 \('32-2M'\) must read 'block_size:tokens'"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_config(base, [("train.schedule", schedule)])
    with pytest.raises(ValueError, match=r"model\.block_size \(64\) is shorter than .* \(128\)"):
        build_config(base, [("train.schedule", "32:1M,128:inf"), ("model.block_size", 64)])


def test_overrides_extends_and_files(tmp_path):
    write(tmp_path, {**SMALL, "optim": {"lr": 0.01, "beta2": 0.99}}, "base.yaml")
    child = write(tmp_path, {"extends": "base.yaml", "optim": {"lr": 0.02}}, "child.yaml")
    [(name, config)] = load_runs(child, ["model.n_layer=3", "ema.enabled=true"])
    assert name == ""
    assert (config.optim.lr, config.optim.beta2) == (0.02, 0.99)  # deep merge
    assert config.model.n_layer == 3 and config.ema.enabled is True
    with pytest.raises(ValueError, match="must read key=value"):
        load_runs(child, ["model.n_layer"])
    with pytest.raises(FileNotFoundError, match="missing.yaml' does not exist"):
        load_runs(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_runs(tmp_path / "bad.yaml")


def test_sweep_gives_one_validated_run_per_point(tmp_path):
    data = {**SMALL, "log": {"out_dir": "out"}, "sweep": {"model.n_embd": [32, 64]}}
    runs = load_runs(write(tmp_path, data), ["parametrization.base_width=32"])
    assert [n for n, _ in runs] == ["n_embd=32", "n_embd=64"]
    assert [c.model.n_embd for _, c in runs] == [32, 64]
    assert [c.log.out_dir for _, c in runs] == ["out/n_embd=32", "out/n_embd=64"]
    bad = {**data, "sweep": {"model.n_embd": [32, 50]}}
    with pytest.raises(ValueError, match=r"model\.n_embd \(50\)"):  # before any run trains
        load_runs(write(tmp_path, bad))


def test_differences_ignore_run_control_keys():
    a = build_config(SMALL).to_dict()
    b = build_config(SMALL, [("log.out_dir", "x"), ("train.stop_step", 3)]).to_dict()
    assert differences(a, b) == []
    c = build_config(SMALL, [("model.n_embd", 128)]).to_dict()
    assert differences(a, c) == ["model.n_embd is 128 in the config, 64 in the checkpoint"]


def test_global_lr_rule_is_one_learning_rate_with_the_rules_init():
    """lr_rule 'global' with sp: standard init and one lr (the muTransfer papers' SP)."""
    config = build_config(SMALL, [("parametrization.name", "sp"), ("model.n_embd", 128)])
    config.parametrization.base_width = 32
    config.parametrization.lr_rule = "global"
    config.validate()
    _, param, _ = build_model(config, vocab_size=11)
    assert {g["lr"] for g in param.param_groups} == {config.optim.lr}
    assert all(s.multiplier == 1.0 for s in param.layers)
    hidden = next(s for s in param.layers if s.role == "hidden")
    assert hidden.init_std == pytest.approx(128**-0.5)  # N(0, 1/fan_in)
    config.parametrization.lr_rule = "abc"  # the engine's sp: hidden Adam lr ~ 1/n
    _, param, _ = build_model(config, vocab_size=11)
    lrs = {s.role: s.lr for s in param.layers}
    assert lrs["hidden"] == pytest.approx(config.optim.lr * 32 / 128)
