"""onnxruntime runs deltaplan's exported planners and must reproduce deltaplan's own waypoints.

Called by crates/onnx/tests/onnxruntime.rs (part of `cargo test --workspace --release`) with a
directory holding `obs.f32` ([N, 128] little-endian float32 recorded observations) and, for each
NAME in (sft, rl), `NAME.onnx` and `NAME_waypoints.f32` (deltaplan's [N, H, 2] waypoints).
Exits non-zero when any waypoint differs by more than TOLERANCE metres.

    python python/onnx_parity.py DIR

Timing onnxruntime on the same model as deltaplan's own ONNX bench: python/onnx_bench.py.
"""

import sys

import numpy as np
import onnxruntime as ort

TOLERANCE = 1e-5
OBS_DIM = 128


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def parity(directory):
    obs = np.fromfile(f"{directory}/obs.f32", dtype="<f4").reshape(-1, OBS_DIM)
    ok = True
    for name in ("sft", "rl"):
        sess = session(f"{directory}/{name}.onnx", threads=1)
        (waypoints,) = sess.run(["waypoints"], {"obs": obs})
        ours = np.fromfile(f"{directory}/{name}_waypoints.f32", dtype="<f4")
        ours = ours.reshape(waypoints.shape)
        diff = float(np.abs(waypoints - ours).max())
        print(f"{name}: {len(obs)} observations, waypoints {waypoints.shape}, "
              f"max |onnxruntime - deltaplan| = {diff:.3e} m (tolerance {TOLERANCE:.0e})")
        ok &= bool(np.isfinite(waypoints).all()) and diff <= TOLERANCE
    return ok


if __name__ == "__main__":
    sys.exit(0 if parity(sys.argv[1]) else 1)
