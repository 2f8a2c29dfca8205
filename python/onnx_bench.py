"""onnxruntime's time per call on an exported planner, at batch 64 and 1024.

Called by `cargo bench -p deltaplan-onnx` (crates/onnx/benches/onnx.rs) when DELTAPLAN_PYTHON
names an interpreter with onnxruntime and numpy, on the same model and thread count as its
tract and native rows, so the three are measured in one run:

    python python/onnx_bench.py MODEL.onnx THREADS

Prints one line per batch: `batch B: US us/call` (median of each round, best of 15 rounds, the
bench's own statistic).
"""

import sys
import time

import numpy as np
import onnxruntime as ort

OBS_DIM = 142  # crates/sim/src/obs.rs


def main(path, threads, rounds=15):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for batch, iters in ((64, 400), (1024, 40)):
        x = rng.standard_normal((batch, OBS_DIM), dtype=np.float32)
        for _ in range(iters // 4):
            sess.run(["waypoints"], {"obs": x})
        best = float("inf")
        for _ in range(rounds):
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                sess.run(["waypoints"], {"obs": x})
                times.append(time.perf_counter() - t)
            best = min(best, float(np.median(times)))
        print(f"batch {batch}: {best * 1e6:.1f} us/call (onnxruntime {ort.__version__})")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
