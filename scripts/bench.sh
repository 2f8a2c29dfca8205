#!/usr/bin/env bash
# The benchmark suite: simulator, heads (inference and PPO update), end-to-end refinement, each
# beside the PyTorch way of doing the same work when PyTorch is installed. Prints one table.
#   scripts/bench.sh                 # PyTorch from `python3`, or TORCH_PYTHON=/path/to/python
# Never needed for tests or CI. Takes about 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
py=${TORCH_PYTHON:-python3}
threads=${THREADS:-2}

cargo bench -q -p deltaplan-sim 2>/dev/null | tee "$logs/sim.txt"
RAYON_NUM_THREADS=$threads cargo bench -q -p deltaplan-learn --bench ppo 2>/dev/null | tee "$logs/learn.txt"
"$py" python/bench_torch.py --threads "$threads" --dims 64,256,40 | tee "$logs/torch_ref.txt"
"$py" python/bench_torch.py --threads "$threads" --dims 276,128,20 | tee "$logs/torch_default.txt"

# End to end: default refinement settings (128 worlds x 128 steps per iteration), 20 iterations,
# on a quickly trained SFT planner (its quality does not change the speed).
out="$logs/run"
cargo run -q --release -- refine --help >/dev/null
./target/release/deltaplan record --out "$out" --threads "$threads" --set demos.steps=200 --set sft.epochs=2 --set refine.iterations=20 2>/dev/null
./target/release/deltaplan train-sft --out "$out" --threads "$threads" --set demos.steps=200 --set sft.epochs=2 --set refine.iterations=20 2>/dev/null
CI=1 ./target/release/deltaplan refine --out "$out" --threads "$threads" --set demos.steps=200 --set sft.epochs=2 --set refine.iterations=20 2>/dev/null
cp "$out/metrics.jsonl" "$logs/metrics.jsonl"

python3 scripts/bench_table.py "$logs" "${RUN_REPORT:-runs/default/report.json}"
rm -rf "$logs"
