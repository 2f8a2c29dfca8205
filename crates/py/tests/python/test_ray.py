"""Ray scale-out: the refinement with its rollouts collected by two Ray actors, on a local
cluster the test starts, equals the single-process refinement bit for bit; an interrupted
single-process run resumes on Ray, and a run whose worker died resumes, to the same bits."""

import json
import os
import shutil
import subprocess

import pytest

import deltaplan
from conftest import require_ray
from deltaplan.distributed import refine_on_ray, split_worlds
from test_stages import cli, cli_sets

# 12 worlds split 6 + 6; 5 iterations = 3 of critic warm-up + 2 actor updates; a checkpoint
# every 2 iterations.
SMALL = {
    "seed": 4,
    "checkpoint_every": 2,
    "demos.steps": 200,
    "sft.epochs": 2,
    "refine.num_envs": 12,
    "refine.rollout_steps": 32,
    "refine.iterations": 5,
    "refine.ppo.num_minibatches": 4,
}
THREADS = 2


def without_timing(metrics_path) -> list[dict]:
    lines = [json.loads(line) for line in open(metrics_path)]
    for line in lines:
        line.pop("steps_per_second")
        line.pop("seconds")
    return lines


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray_sft")
    deltaplan.record(out, SMALL, THREADS)
    deltaplan.train_sft(out, SMALL, THREADS)
    return out


@pytest.fixture(scope="module")
def local_cluster():
    ray = require_ray()
    # Logical CPUs (Ray's unit of scheduling): room for three one-CPU workers on any machine.
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_split_worlds_covers_every_world_once():
    assert split_worlds(12, 2) == [(0, 6), (6, 6)]
    assert split_worlds(7, 3) == [(0, 3), (3, 2), (5, 2)]
    with pytest.raises(deltaplan.ConfigError, match="between 1 and refine.num_envs = 4"):
        split_worlds(4, 5)


def test_two_ray_workers_refine_to_the_single_process_bits(sft_run, local_cluster, tmp_path):
    single, on_ray = tmp_path / "single", tmp_path / "ray"
    shutil.copytree(sft_run, single)
    shutil.copytree(sft_run, on_ray)
    deltaplan.refine(single, SMALL, THREADS)
    path = refine_on_ray(on_ray, SMALL, workers=2, threads_per_worker=1, num_threads=THREADS)
    assert path.endswith("rl.safetensors")
    assert (on_ray / "rl.safetensors").read_bytes() == (single / "rl.safetensors").read_bytes()
    curve = without_timing(on_ray / "metrics.jsonl")
    assert curve == without_timing(single / "metrics.jsonl")
    assert len(curve) == SMALL["refine.iterations"]
    # The last iterations updated the actor (not only the critic), so the comparison covers it.
    assert not curve[-1]["actor_frozen"]
    assert sum(line["episodes"] for line in curve) > 0


def test_an_interrupted_run_resumes_on_ray_to_the_same_bits(sft_run, local_cluster, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    shutil.copytree(sft_run, straight)
    shutil.copytree(sft_run, interrupted)
    deltaplan.refine(straight, SMALL, THREADS)
    # The CLI dies (as under SIGKILL) after iteration 3's metrics line; its checkpoint holds 2.
    died = subprocess.run(
        [cli(), "--threads", str(THREADS), "refine", "--out", interrupted, *cli_sets(SMALL)],
        env={**os.environ, "DELTAPLAN_FAULT": "refine:appended@3"},
        capture_output=True,
    )
    assert died.returncode != 0
    assert len(open(interrupted / "metrics.jsonl").read().splitlines()) == 3
    refine_on_ray(interrupted, SMALL, workers=3, num_threads=THREADS)
    assert (interrupted / "rl.safetensors").read_bytes() == (straight / "rl.safetensors").read_bytes()
    assert without_timing(interrupted / "metrics.jsonl") == without_timing(straight / "metrics.jsonl")


def test_more_workers_than_the_cluster_holds_are_refused(sft_run, local_cluster, tmp_path):
    with pytest.raises(deltaplan.ConfigError, match="4 workers of 1 CPUs each need 4 CPUs; the Ray cluster has 3"):
        refine_on_ray(sft_run, SMALL, workers=4)


def test_a_damaged_request_is_refused_by_name(sft_run):
    actor = deltaplan.distributed.RolloutActor(
        deltaplan.settings_json(SMALL), {"sft.safetensors": (sft_run / "sft.safetensors").read_bytes()}, 0, 6)
    with pytest.raises(deltaplan.StageError, match="a rollout request.*not a valid safetensors"):
        actor.collect(b"not a request")


def test_a_worker_that_dies_stops_the_run_by_name_and_a_rerun_resumes_to_the_same_bits(sft_run, tmp_path):
    ray = require_ray()
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    shutil.copytree(sft_run, straight)
    shutil.copytree(sft_run, crashed)
    deltaplan.refine(straight, SMALL, THREADS)
    # Every worker process of this cluster aborts (as under SIGKILL) on its 4th request.
    ray.shutdown()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"DELTAPLAN_FAULT": "worker:collect@4"}})
    try:
        with pytest.raises(deltaplan.StageError,
                           match=r"(?s)the rollout workers failed: collecting the rollout.*iteration 2"):
            refine_on_ray(crashed, SMALL, workers=2, num_threads=THREADS)
    finally:
        ray.shutdown()
    assert len(open(crashed / "metrics.jsonl").read().splitlines()) == 3
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        refine_on_ray(crashed, SMALL, workers=2, num_threads=THREADS)
    finally:
        ray.shutdown()
    assert (crashed / "rl.safetensors").read_bytes() == (straight / "rl.safetensors").read_bytes()
    assert without_timing(crashed / "metrics.jsonl") == without_timing(straight / "metrics.jsonl")
