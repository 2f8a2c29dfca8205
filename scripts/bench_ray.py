#!/usr/bin/env python3
"""Refinement throughput on Ray beside the single-process refinement, in one run.

    .venv/bin/python scripts/bench_ray.py [--workers 2] [--iterations 10] [--threads 2]

Records demonstrations and trains an SFT planner once (small), then refines it with the default
batch (128 worlds x 128 steps per iteration) twice from the same start, alternately, `--repeats`
times each: `deltaplan.refine` in this process, and `deltaplan.distributed.refine_on_ray` with
`--workers` Ray actors of one thread each on a local cluster (the learner here with `--threads`).
Prints the wall time of each refine stage as environment steps per second (rollout, messages
and PPO update included; for Ray also starting the actors), the median iteration's rate from
`metrics.jsonl` (steady state), the ratios, and whether the two checkpoints are the same bytes
(they must be).
"""

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import deltaplan
from deltaplan.distributed import refine_on_ray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="threads of the single process and of the learner")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import ray

    config = {"demos.steps": 300, "sft.epochs": 3, "refine.iterations": args.iterations}
    root = Path(tempfile.mkdtemp(prefix="deltaplan-bench-ray-"))
    base = root / "base"
    deltaplan.record(base, config, args.threads)
    deltaplan.train_sft(base, config, args.threads)
    settings = deltaplan.default_settings()["refine"]
    steps = settings["num_envs"] * settings["rollout_steps"] * args.iterations
    ray.init(num_cpus=max(args.workers, 2), include_dashboard=False, log_to_driver=False)
    times = {"single": [], "ray": []}
    rates = {"single": [], "ray": []}
    try:
        for r in range(args.repeats):
            for kind in ("single", "ray"):
                out = root / f"{kind}{r}"
                shutil.copytree(base, out)
                t = time.perf_counter()
                if kind == "single":
                    deltaplan.refine(out, config, args.threads)
                else:
                    refine_on_ray(out, config, workers=args.workers, num_threads=args.threads)
                times[kind].append(time.perf_counter() - t)
                rates[kind] += [json.loads(line)["steps_per_second"] for line in open(out / "metrics.jsonl")]
        same = (root / "single0/rl.safetensors").read_bytes() == (root / "ray0/rl.safetensors").read_bytes()
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    single, on_ray = statistics.median(times["single"]), statistics.median(times["ray"])
    print(f"refine, {args.iterations} iterations x {steps // args.iterations:,} env steps, median of {args.repeats}:")
    print(f"  one process ({args.threads} threads): {single:.1f} s = {steps / single:,.0f} env steps/s")
    print(f"  Ray, {args.workers} workers x 1 thread + learner ({args.threads} threads): "
          f"{on_ray:.1f} s = {steps / on_ray:,.0f} env steps/s")
    print(f"  ratio Ray / one process: {single / on_ray:.2f}x; checkpoints identical: {same}")
    r1, r2 = statistics.median(rates["single"]), statistics.median(rates["ray"])
    print(f"  median iteration: one process {r1:,.0f} env steps/s, Ray {r2:,.0f} ({r2 / r1:.2f}x)")


if __name__ == "__main__":
    main()
