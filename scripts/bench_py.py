#!/usr/bin/env python3
"""The Python package's speed beside the raw Rust step and a peer, in one run.

    .venv/bin/python scripts/bench_py.py [--num-envs 1024] [--threads 0] [--ppo-steps 8192]

1. DriveVectorEnv.step at N worlds vs the raw Rust batched step (same worlds, plans and thread
   pool; the raw step writes into the batch's own buffers, no Python, no copies). Bar: at most
   10% more.
2. DriveEnv.step (one world) rate, a constant plan from Python.
3. Stable-Baselines3 PPO samples/s (rollouts and updates) on DriveSB3VecEnv vs on highway-env
   (`highway-fast-v0`, SB3's DummyVecEnv) with the same SB3 settings, as a ratio; highway-env
   is skipped if it is not installed.
"""

import argparse
import statistics
import time

import numpy as np

import deltaplan
from deltaplan import _native


def straight_plans(n: int, horizon: int = 10, speed: float = 10.0, dt: float = 0.2) -> np.ndarray:
    """Waypoints straight ahead at `speed`: every world drives the same way each step."""
    plan = np.zeros((horizon, 2), np.float32)
    plan[:, 0] = speed * dt * np.arange(1, horizon + 1)
    return np.ascontiguousarray(np.tile(plan.reshape(1, -1), (n, 1)))


def vector_vs_raw(n: int, threads: int, steps: int, repeats: int = 5) -> dict:
    plans = straight_plans(n)
    env = deltaplan.DriveVectorEnv(num_envs=n, num_threads=threads)
    env.reset(seed=0)
    raw = _native.Batch(n, 0, deltaplan.settings_json(), num_threads=threads)
    for _ in range(20):
        env.step(plans)
    raw.time_raw_steps(plans, 20)
    py_times, raw_times = [], []
    for _ in range(repeats):  # interleaved, so drift in machine load hits both
        t = time.perf_counter()
        for _ in range(steps):
            env.step(plans)
        py_times.append((time.perf_counter() - t) / steps)
        raw_times.append(raw.time_raw_steps(plans, steps) / steps)
    py_s, raw_s = statistics.median(py_times), statistics.median(raw_times)
    return {"python_us": py_s * 1e6, "raw_us": raw_s * 1e6, "overhead": py_s / raw_s - 1.0,
            "python_steps_per_s": n / py_s, "raw_steps_per_s": n / raw_s}


def python_progress_during_steps(n: int, threads: int, seconds: float = 1.0) -> float:
    """How fast another Python thread runs while the main thread steps N worlds, relative to
    while the main thread sleeps: near 1 when the GIL is released during the batched step,
    near 0 when it is held."""
    import threading

    env = deltaplan.DriveVectorEnv(num_envs=n, num_threads=threads)
    env.reset(seed=0)
    plans = straight_plans(n)

    def count_while(busy) -> float:
        stop, count = threading.Event(), [0]

        def spin():
            while not stop.is_set():
                count[0] += 1

        t = threading.Thread(target=spin)
        t.start()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            busy()
        stop.set()
        t.join()
        return count[0] / (time.perf_counter() - start)

    idle = count_while(lambda: time.sleep(0.01))
    stepping = count_while(lambda: env.step(plans))
    return stepping / idle


def single_env_rate(steps: int) -> float:
    env = deltaplan.DriveEnv(num_threads=1)
    env.reset(seed=0)
    plan = straight_plans(1)[0]
    t = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(plan)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t)


def ppo_rate(env, steps: int) -> float:
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", env, n_steps=256, batch_size=256, n_epochs=4, seed=0, verbose=0, device="cpu")
    model.learn(total_timesteps=256 * env.num_envs)  # warm-up: first rollout and update
    t = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-envs", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0, help="0: rayon's global pool (all cores)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--single-steps", type=int, default=20000)
    ap.add_argument("--ppo-envs", type=int, default=8)
    ap.add_argument("--ppo-steps", type=int, default=8192)
    args = ap.parse_args()

    v = vector_vs_raw(args.num_envs, args.threads, args.steps)
    print(f"VectorEnv.step, N={args.num_envs}: {v['python_us']:.0f} us ({v['python_steps_per_s']:,.0f} steps/s); "
          f"raw Rust step {v['raw_us']:.0f} us ({v['raw_steps_per_s']:,.0f} steps/s); overhead {100 * v['overhead']:+.1f}%")
    g = python_progress_during_steps(args.num_envs, args.threads)
    print(f"another Python thread runs at {100 * g:.0f}% of its idle speed during VectorEnv.step (GIL released)")
    print(f"DriveEnv.step (one world, 1 thread): {single_env_rate(args.single_steps):,.0f} steps/s")
    try:
        import torch

        torch.set_num_threads(max(1, args.threads) if args.threads else torch.get_num_threads())
        from deltaplan.sb3 import DriveSB3VecEnv
    except ImportError:
        print("SB3 PPO: stable-baselines3 not installed, skipped")
        return
    ours = ppo_rate(DriveSB3VecEnv(args.ppo_envs, num_threads=args.threads), args.ppo_steps)
    print(f"SB3 PPO on deltaplan ({args.ppo_envs} envs, n_steps 256, MlpPolicy): {ours:,.0f} samples/s")
    try:
        import highway_env  # noqa: F401 (registers the environments)
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        print("SB3 PPO on highway-env: highway-env not installed, skipped")
        return
    peer_steps = max(256 * args.ppo_envs, args.ppo_steps // 16)
    peer = ppo_rate(make_vec_env("highway-fast-v0", n_envs=args.ppo_envs, seed=0), peer_steps)
    print(f"SB3 PPO on highway-env highway-fast-v0 (same settings): {peer:,.0f} samples/s; "
          f"ratio deltaplan / highway-env = {ours / peer:.1f}x")


if __name__ == "__main__":
    main()
