"""Mistakes a user can make raise clear Python exceptions and leave the interpreter and the
environment usable."""

import numpy as np
import pytest

import deltaplan


def test_exceptions_are_value_and_runtime_errors():
    assert issubclass(deltaplan.ActionError, ValueError)
    assert issubclass(deltaplan.ConfigError, ValueError)
    assert issubclass(deltaplan.CheckpointError, ValueError)
    assert issubclass(deltaplan.ClosedError, RuntimeError)


@pytest.mark.parametrize("make", [lambda: deltaplan.DriveEnv(), lambda: deltaplan.DriveVectorEnv(num_envs=3)])
def test_wrong_shape_dtype_and_nan_actions_are_refused_and_the_env_still_steps(make):
    env = make()
    env.reset(seed=1)
    good = env.action_space.sample() * 0.0 + np.float32(5.0)
    with pytest.raises(deltaplan.ActionError, match="shape"):
        env.step(np.zeros((2, 21), np.float32))
    with pytest.raises(deltaplan.ActionError, match="floating point"):
        env.step(good.astype(np.int64))
    with pytest.raises(deltaplan.ActionError, match="floating point"):
        env.step(np.array(["a"] * good.size).reshape(good.shape))
    bad = good.copy()
    bad.reshape(-1)[3] = np.nan
    with pytest.raises(deltaplan.ActionError, match="non-finite"):
        env.step(bad)
    bad.reshape(-1)[3] = np.inf
    with pytest.raises(deltaplan.ActionError, match="non-finite"):
        env.step(bad)
    # float64 is cast, and the refused calls did not move the world.
    env.step(good.astype(np.float64))
    env.close()
    with pytest.raises(deltaplan.ClosedError):
        env.step(good)
    with pytest.raises(deltaplan.ClosedError):
        env.reset(seed=1)


def test_bad_configuration_keys_and_values_name_the_field():
    with pytest.raises(deltaplan.ConfigError, match="comfort_penaltyy"):
        deltaplan.DriveEnv(config={"sim.reward.comfort_penaltyy": 1.0})
    with pytest.raises(deltaplan.ConfigError, match="nosuchsection"):
        deltaplan.DriveEnv(config={"nosuchsection": {"x": 1}})
    with pytest.raises(deltaplan.ConfigError, match="horizon"):
        deltaplan.DriveEnv(config={"sim": {"horizon": 1000}})
    with pytest.raises(deltaplan.ConfigError, match="finite"):
        deltaplan.DriveEnv(config={"sim.dt": float("nan")})
    with pytest.raises(deltaplan.ConfigError, match="sft_path"):
        deltaplan.DriveEnv(action_mode="residual")
    with pytest.raises(deltaplan.ConfigError, match="action_mode"):
        deltaplan.DriveEnv(action_mode="steer")
    with pytest.raises(deltaplan.CheckpointError):
        deltaplan.DriveEnv(action_mode="residual", sft_path="/nonexistent/sft.safetensors")
    # A valid setting takes effect: a longer horizon widens the action.
    assert deltaplan.DriveEnv(config={"sim.horizon": 12}).action_space.shape == (24,)
