"""Refinement with its rollouts collected by Ray actors (``pip install "deltaplan[ray]"``).

Each actor holds a contiguous range of the training worlds (its own Rust worlds and its own copy
of the frozen planner, built inside the actor: native objects do not pickle) and answers every
iteration's request with its part of the rollout; this process learns (GAE and the PPO update)
and writes the same ``rl.safetensors`` and ``metrics.jsonl`` as ``deltaplan refine``. For the
same configuration and seed, and the same ``num_threads`` here as ``deltaplan refine
--threads``, the result is the single-process refinement's, bit for bit, for any number of
workers: this process draws all the randomness (every world's action noise, sent with the
weights, and the minibatch shuffles) in the order one process draws it, every world plays the
scenarios of its global index, and the networks compute each row independently of its batch.
A checkpoint of either kind resumes the other.

The frozen planner's files travel to the actors through Ray's object store, so the workers need
no shared file system. On a cluster, start Ray there (``ray start --head`` on one machine,
``ray start --address=HEAD:6379`` on the others) and pass ``address="auto"`` (or
``"ray://HEAD:10001"`` from outside); each worker asks Ray for ``threads_per_worker`` CPUs.
"""

import json
import tempfile
from os import PathLike
from pathlib import Path
from typing import Any

from deltaplan import _native
from deltaplan._settings import default_settings, settings_json

Config = dict[str, Any] | None


def split_worlds(num_envs: int, workers: int) -> list[tuple[int, int]]:
    """``workers`` contiguous ranges ``(first, count)`` covering ``num_envs`` worlds, the first
    ones one world larger when they do not divide evenly."""
    if not 1 <= workers <= num_envs:
        raise _native.ConfigError(f"workers = {workers} must be between 1 and refine.num_envs = {num_envs}")
    base, extra = divmod(num_envs, workers)
    ranges, first = [], 0
    for w in range(workers):
        count = base + (w < extra)
        ranges.append((first, count))
        first += count
    return ranges


class RolloutActor:
    """Worlds ``first..first + count`` of the refinement: what one Ray actor holds. ``files``
    maps file names to the bytes of the run's frozen planner (``sft.safetensors``, or the ONNX
    planner and its spec), written to a directory of the actor's own."""

    def __init__(self, settings: str, files: dict[str, bytes], first: int, count: int, num_threads: int = 1):
        self._dir = Path(tempfile.mkdtemp(prefix="deltaplan-worker-"))
        for name, data in files.items():
            (self._dir / name).write_bytes(data)
        nested = json.loads(settings)
        if "planner" in nested:
            nested["planner"] = str(self._dir / Path(nested["planner"]).name)
        self._worker = _native.RolloutWorker(str(self._dir), json.dumps(nested), first, count, num_threads)

    def collect(self, request: bytes) -> bytes:
        return self._worker.collect(request)

    def snapshot(self) -> bytes:
        return self._worker.snapshot()

    def restore(self, env: bytes) -> None:
        self._worker.restore(env)


def refine_on_ray(out_dir: str | PathLike, config: Config = None, *, workers: int = 2,
                  threads_per_worker: int = 1, num_threads: int = 0, address: str | None = None) -> str:
    """``deltaplan refine`` with the rollouts collected by ``workers`` Ray actors. Needs the
    run's frozen planner (``sft.safetensors`` in ``out_dir`` after ``record`` and ``train_sft``,
    or an ONNX ``planner`` in ``config``). Connects to the Ray cluster at ``address`` (default:
    the running one, else a local one started here and shut down after). ``num_threads`` is the
    learner's thread count (0: all cores). Returns the path of ``rl.safetensors``."""
    import ray

    settings = settings_json(config)
    num_envs = _setting(json.loads(settings), "refine", "num_envs")
    ranges = split_worlds(num_envs, workers)
    files = _planner_files(Path(out_dir), json.loads(settings))
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    actors = []
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        if workers * threads_per_worker > cpus:
            raise _native.ConfigError(
                f"{workers} workers of {threads_per_worker} CPUs each need {workers * threads_per_worker} CPUs; "
                f"the Ray cluster has {cpus:g}: use fewer workers or threads_per_worker, or a larger cluster")
        files_ref = ray.put(files)
        actor_class = ray.remote(num_cpus=threads_per_worker)(RolloutActor)
        actors = [actor_class.remote(settings, files_ref, first, count, threads_per_worker)
                  for first, count in ranges]

        def collect(request: bytes) -> list[bytes]:
            ref = ray.put(request)
            return ray.get([a.collect.remote(ref) for a in actors])

        def snapshots() -> list[bytes]:
            return ray.get([a.snapshot.remote() for a in actors])

        def restore(env: bytes) -> None:
            ref = ray.put(env)
            ray.get([a.restore.remote(ref) for a in actors])

        return _native.refine_distributed(str(out_dir), settings, collect, snapshots, restore, num_threads)
    finally:
        for a in actors:
            ray.kill(a)
        if started_here:
            ray.shutdown()


def _setting(nested: dict, section: str, key: str):
    value = nested.get(section, {}).get(key)
    return default_settings()[section][key] if value is None else value


def _planner_files(out_dir: Path, nested: dict) -> dict[str, bytes]:
    """The bytes of the run's frozen planner, by file name."""
    if "planner" in nested:
        model = Path(nested["planner"])
        files = {model.name: _read(model)}
        sidecar = model.with_suffix(".toml")
        if sidecar.exists():
            files[sidecar.name] = _read(sidecar)
        return files
    return {"sft.safetensors": _read(out_dir / "sft.safetensors")}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _native.StageError(
            f"{path} not found: the workers need the run's frozen planner; run deltaplan.record and "
            "deltaplan.train_sft on this directory first, or set an ONNX `planner`") from None
