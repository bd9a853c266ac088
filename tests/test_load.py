"""run/load: rebuilding a run's config from its recorded command line, and the one-line errors of a directory that
cannot be loaded (the loading itself is exercised end to end by notebooks/metrics.ipynb)."""

from __future__ import annotations

import json

import pytest

from plasticine_jax.errors import ConfigError
from plasticine_jax.run.load import checkpoint_steps, config_from_argv, load_run, run_config

ARGV = ["--num-seeds", "2", "--total-timesteps", "1000", "--net.activation", "relu"]


def test_config_from_argv_is_what_the_cli_runs():
    cfg = config_from_argv(ARGV)
    assert (cfg.run.algo, cfg.run.env, cfg.run.num_seeds, cfg.run.total_timesteps) == ("ppo", "gymnax:CartPole-v1",
                                                                                       2, 1000)
    assert cfg.algo_cfg.net.activation == "relu"


def test_run_config_reads_the_recorded_argv(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"argv": ARGV}))
    assert run_config(tmp_path) == config_from_argv(ARGV)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="missing or unreadable"):
        run_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"seeds": [0]}))
    with pytest.raises(ConfigError, match="cfg=cfg"):
        run_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"argv": ARGV, "seeds": [0, 1], "sweep": [{}]}))
    assert checkpoint_steps(tmp_path) == []
    with pytest.raises(ConfigError, match="no checkpoint"):
        load_run(tmp_path)
