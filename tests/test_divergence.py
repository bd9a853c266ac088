"""The in-graph divergence guard: per seed, the first update whose parameters go non-finite is recorded with the
quantity that went first, the seed's units stay at their last finite values, and the other vmapped seeds are
exactly what they would be without it."""

import jax
import jax.numpy as jnp
import numpy as np

from plasticine_jax.algos import registry
from plasticine_jax.algos.learner import DIVERGENCE_QUANTITIES, divergence_code
from plasticine_jax.algos.state import Unit

BAD_LR = 1e8  # the planted divergence


def _learner(algo: str, env: str, steps: int):
    cm = registry.config_module(algo)
    return registry.learner_module(algo).make_train(cm.PRESETS[cm.default_preset(env)], env, steps)


def _unit(value: float) -> Unit:
    return Unit(params={"w": jnp.array([1.0, value])}, net_state={}, opt_state=None, istate=None, hp={})


def test_divergence_code_names_the_first_quantity():
    ok, nan = {"losses/td_loss": jnp.array(1.0)}, {"losses/td_loss": jnp.array(jnp.nan)}
    grad_nan = {"losses/td_loss": jnp.array(1.0), "plasticity/gradient_norm": jnp.array(jnp.inf)}
    assert int(divergence_code({"q": _unit(2.0)}, ok)) == 0
    assert int(divergence_code({"q": _unit(2.0)}, nan)) == 0  # a NaN loss of an update without a gradient step
    assert DIVERGENCE_QUANTITIES[int(divergence_code({"q": _unit(jnp.nan)}, nan)) - 1] == "loss"
    assert DIVERGENCE_QUANTITIES[int(divergence_code({"q": _unit(jnp.nan)}, grad_nan)) - 1] == "gradient norm"
    assert DIVERGENCE_QUANTITIES[int(divergence_code({"q": _unit(jnp.inf)}, ok)) - 1] == "params"


def test_bad_seed_is_frozen_and_the_others_are_untouched():
    learner = _learner("pqn", "gymnax:CartPole-v1", 8 * 2048)
    hp = learner.default_hparams()

    def train(lr):
        return learner.train(jax.random.PRNGKey(0), {**hp, "learning_rate": lr})

    both, out = jax.jit(jax.vmap(train))(jnp.array([hp["learning_rate"], BAD_LR]))
    alone, out_alone = jax.jit(jax.vmap(train))(jnp.array([hp["learning_rate"]]))
    assert both.diverged.tolist()[0] == 0 and both.diverged.tolist()[1] >= 1
    assert DIVERGENCE_QUANTITIES[int(both.diverged_what[1]) - 1] == "loss"
    flags = np.asarray(out["charts/diverged"])
    first = int(both.diverged[1]) - 1
    assert not flags[0].any() and not flags[1, :first].any() and flags[1, first:].all()
    for a, b in zip(jax.tree.leaves(both.units), jax.tree.leaves(alone.units), strict=True):
        np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(out["losses/td_loss"][0]), np.asarray(out_alone["losses/td_loss"][0]),
                               rtol=1e-5)
    for leaf in jax.tree.leaves({n: u.params for n, u in both.units.items()}):
        assert np.isfinite(np.asarray(leaf[1])).all()  # the diverged seed kept its last finite params


def test_frozen_units_keep_their_last_finite_values():
    learner = _learner("td3", "gymnax:Pendulum-v1", 3000)
    hp = {**learner.default_hparams(), "critic_lr": BAD_LR}
    key = jax.random.PRNGKey(1)
    state, _ = jax.jit(lambda k: learner.train(k, hp))(key)
    first = int(state.diverged)  # 1 + the update that diverged
    assert first >= 1 and DIVERGENCE_QUANTITIES[int(state.diverged_what) - 1] == "loss"
    before, _ = jax.jit(lambda k: learner.run_updates(learner.init(k, hp), 0, first - 1))(key)
    for name in state.units:
        for a, b in zip(jax.tree.leaves(state.units[name].params), jax.tree.leaves(before.units[name].params),
                        strict=True):
            assert np.isfinite(np.asarray(a)).all()
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _train(tmp_path, name, *extra):
    from plasticine_jax.cli import main

    out = tmp_path / name
    rc = main(["train", "--algo", "pqn", "--total-timesteps", "8192", "--num-seeds", "1", "--no-wandb",
               "--no-progress", "--out", str(out), *extra])
    return rc, out


def _rows(out):
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cli_stops_with_one_line_naming_run_update_and_quantity(tmp_path, capsys):
    rc, out = _train(tmp_path, "stop", "--sweep", "learning_rate=1e-3,1e8")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 3
    assert err.startswith("error: seed 0, learning_rate 1e+08 diverged at update 1") and "non-finite loss" in err
    assert not (out / "summary.json").exists()


def test_cli_continue_freezes_the_bad_run_and_the_other_equals_a_run_without_it(tmp_path, capsys):
    import json

    rc, out = _train(tmp_path, "continue", "--sweep", "learning_rate=1e-3,1e8", "--on-divergence", "continue")
    assert rc == 0 and "diverged at update 1" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert [(d["learning_rate"], d["update"], d["quantity"]) for d in summary["diverged"]] == [(1e8, 1, "loss")]
    rc, alone = _train(tmp_path, "alone", "--sweep", "learning_rate=1e-3")
    good = [r for r in _rows(out) if r["learning_rate"] == 1e-3]
    ref = _rows(alone)
    assert len(good) == len(ref) > 0
    for a, b in zip(good, ref, strict=True):
        np.testing.assert_allclose(a["losses/td_loss"], b["losses/td_loss"], rtol=1e-5)
        assert a["charts/diverged"] == 0.0
    assert all(r["charts/diverged"] == 1.0 for r in _rows(out) if r["learning_rate"] == 1e8)
