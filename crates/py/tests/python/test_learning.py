"""A user's RL algorithm can do what deltaplan's PPO does: SB3 PPO on the residual action mode
improves the weak frozen planner's closed-loop driving score on held-out scenarios."""

import os

import numpy as np

import deltaplan
from conftest import require_sb3

# The reward without the comfort penalty: this test asserts the driving score, which is what
# that reward pays for (the default reward also pays for comfort, at some driving score).
FAMILY = {"train_scenarios.families": ["cut_in"], "sim.reward.comfort_penalty": 0.0}
EVAL = {"eval.per_family": 60}


def test_sb3_ppo_on_the_residual_beats_the_frozen_planner(weak_sft):
    require_sb3()
    import torch
    from stable_baselines3 import PPO

    from deltaplan.sb3 import DriveSB3VecEnv

    torch.manual_seed(0)
    torch.set_num_threads(1)
    env = DriveSB3VecEnv(num_envs=32, action_mode="residual", sft_path=weak_sft, config=FAMILY, seed=11)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=128,
        batch_size=1024,
        n_epochs=5,
        learning_rate=5e-4,
        gamma=0.99,
        policy_kwargs={"net_arch": [64, 64], "log_std_init": -1.0},
        seed=0,
        verbose=0,
        device="cpu",
    )
    budget = int(os.environ.get("DELTAPLAN_PPO_STEPS", "131072"))
    model.learn(total_timesteps=budget)

    def suite(policy):
        return deltaplan.evaluate(
            policy, split="eval", config={**FAMILY, **EVAL}, action_mode="residual",
            sft_path=weak_sft, families=["cut_in"],
        )

    sft = suite(lambda obs: np.zeros((obs.shape[0], 20), np.float32))
    rl = suite(lambda obs: model.predict(obs, deterministic=True)[0])
    print(f"cut-in eval (60 scenarios), {budget} PPO steps: SFT DS {sft['driving_score']:.1f} "
          f"fail {sft['failure_rate']:.2f}; SB3 PPO residual DS {rl['driving_score']:.1f} fail {rl['failure_rate']:.2f}")
    assert rl["driving_score"] >= sft["driving_score"] + 3.0, (rl["driving_score"], sft["driving_score"])
    assert rl["failure_rate"] < sft["failure_rate"]
