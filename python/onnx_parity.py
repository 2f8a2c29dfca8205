"""onnxruntime runs deltaplan's exported planners and must reproduce deltaplan's own waypoints.

Called by crates/onnx/tests/onnxruntime.rs (part of `cargo test --workspace --release`) with a
directory and the names of the cases in it. For each NAME: `NAME.onnx`, `NAME_obs.f32` (the
observations as deltaplan feeds them, [N, D] little-endian float32: the 142-float vector, then
for a raster planner the raster [C, H, W]) and `NAME_waypoints.f32` (deltaplan's [N, H, 2]).
A model's 2-D input gets the vector, a 4-D input the raster. Exits non-zero when any waypoint
differs by more than TOLERANCE metres.

    python python/onnx_parity.py DIR NAME [NAME ...]

Timing onnxruntime on the same model as deltaplan's own ONNX bench: python/onnx_bench.py.
"""

import sys

import numpy as np
import onnxruntime as ort

TOLERANCE = 1e-5
OBS_DIM = 142  # crates/sim/src/obs.rs


def feeds(sess, rows):
    """The model's inputs from deltaplan's observation rows."""
    out = {}
    for inp in sess.get_inputs():
        if len(inp.shape) == 2:
            out[inp.name] = np.ascontiguousarray(rows[:, :OBS_DIM])
        else:
            shape = [int(d) for d in inp.shape[1:]]
            out[inp.name] = np.ascontiguousarray(rows[:, OBS_DIM:]).reshape(len(rows), *shape)
    return out


def parity(directory, names):
    ok = True
    for name in names:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(f"{directory}/{name}.onnx", opts,
                                    providers=["CPUExecutionProvider"])
        ours = np.fromfile(f"{directory}/{name}_waypoints.f32", dtype="<f4")
        rows = np.fromfile(f"{directory}/{name}_obs.f32", dtype="<f4")
        n = len(ours) // 20
        rows = rows.reshape(n, -1)
        (waypoints,) = sess.run(["waypoints"], feeds(sess, rows))
        ours = ours.reshape(waypoints.shape)
        diff = float(np.abs(waypoints - ours).max())
        print(f"{name}: {n} observations, inputs {[i.name for i in sess.get_inputs()]}, "
              f"waypoints {waypoints.shape}, max |onnxruntime - deltaplan| = {diff:.3e} m "
              f"(tolerance {TOLERANCE:.0e})")
        ok &= bool(np.isfinite(waypoints).all()) and diff <= TOLERANCE
    return ok


if __name__ == "__main__":
    sys.exit(0 if parity(sys.argv[1], sys.argv[2:]) else 1)
