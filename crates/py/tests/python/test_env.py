"""The single-world gymnasium.Env."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import deltaplan
from conftest import require_sb3

EGO_BLUE = (0, 116, 217)


def drive(env, seed, policy, steps):
    """Observations, rewards and flags of `steps` steps from reset(seed), resetting at ends."""
    obs, _ = env.reset(seed=seed)
    trace = [obs.copy()]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(policy(env))
        trace += [obs.copy(), np.float64(r), term, trunc]
        if term or trunc:
            obs, _ = env.reset()
            trace.append(obs.copy())
    return trace


def test_gymnasium_check_env_passes_in_both_action_modes(weak_sft):
    check_env(deltaplan.DriveEnv())
    check_env(deltaplan.DriveEnv(action_mode="residual", sft_path=weak_sft))


def test_sb3_check_env_passes_in_both_action_modes(weak_sft):
    require_sb3()
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(deltaplan.DriveEnv())
    sb3_check_env(deltaplan.DriveEnv(action_mode="residual", sft_path=weak_sft))


def test_same_seed_same_bits_and_another_seed_other_scenarios():
    env = deltaplan.DriveEnv()
    expert = lambda e: e.expert_plan()
    a = drive(env, 7, expert, 400)
    b = drive(env, 7, expert, 400)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = drive(env, 8, expert, 5)
    assert not np.array_equal(a[0], c[0])


def test_expert_episode_ends_with_its_record_and_truncation_on_route_completion():
    env = deltaplan.DriveEnv()
    env.reset(seed=1)
    total, steps = 0.0, 0
    while True:
        obs, r, term, trunc, info = env.step(env.expert_plan())
        assert isinstance(r, float) and isinstance(term, bool) and isinstance(trunc, bool)
        total += r
        steps += 1
        if term or trunc:
            break
        assert info == {}
    assert info["episode_steps"] == steps
    # Route completed = truncation (bootstrapped), never termination.
    assert info["end_reason"] == "RouteCompleted" and trunc and not term
    assert info["route_completion"] == pytest.approx(100.0)
    assert info["driving_score"] == pytest.approx(100.0)
    assert info["failure_rate"] == 0.0
    assert total > 0.0


def test_residual_zero_is_the_frozen_planner_and_one_adds_max_delta(weak_sft):
    residual = deltaplan.DriveEnv(action_mode="residual", sft_path=weak_sft)
    plan = deltaplan.DriveEnv()
    max_delta = np.tile(np.array([4.0, 1.0], dtype=np.float32), 10)  # refine.max_delta default
    for k, action in enumerate([np.zeros(20, np.float32), np.ones(20, np.float32), -2.0 * np.ones(20, np.float32)]):
        o1, _ = residual.reset(seed=11 + k)
        o2, _ = plan.reset(seed=11 + k)
        assert np.array_equal(o1, o2)
        for _ in range(30):
            sft = residual.sft_plan()
            # Out-of-box residuals are clipped to [-1, 1].
            executed = sft + max_delta * np.clip(action, -1.0, 1.0)
            o1, r1, t1, u1, _ = residual.step(action)
            o2, r2, t2, u2, _ = plan.step(executed)
            assert np.array_equal(o1, o2) and r1 == r2 and (t1, u1) == (t2, u2)
            if t1 or u1:
                break


def test_render_rgb_draws_the_ego_at_the_centre_and_svg_is_a_document():
    env = deltaplan.DriveEnv(render_mode="rgb_array")
    env.reset(seed=2)
    image = env.render()
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert tuple(image[128, 128]) == EGO_BLUE
    # Road under the ego's surroundings, grass somewhere else: not a blank image.
    assert len(np.unique(image.reshape(-1, 3), axis=0)) >= 3
    svg_env = deltaplan.DriveEnv(render_mode="svg")
    svg_env.reset(seed=2)
    svg_env.step(svg_env.expert_plan())
    svg = svg_env.render()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")


def test_returned_arrays_are_never_written_again():
    env = deltaplan.DriveEnv()
    obs0, _ = env.reset(seed=4)
    kept = [(obs0, obs0.copy())]
    for _ in range(300):
        obs, *_ = env.step(env.expert_plan())
        kept.append((obs, obs.copy()))
    for (a, a_copy), (b, _) in zip(kept, kept[1:]):
        assert not np.shares_memory(a, b)
    assert all(np.array_equal(a, c) for a, c in kept)
