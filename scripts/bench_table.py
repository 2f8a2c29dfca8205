#!/usr/bin/env python3
"""Reads the logs of scripts/bench.sh and prints the comparison table (markdown)."""
import json
import os
import re
import sys

logs, report = sys.argv[1], sys.argv[2]


def read(name):
    p = os.path.join(logs, name)
    return open(p).read() if os.path.exists(p) else ""


def sections(text):
    """Split a bench table output into {workload header: {row name: (median_us, samples/s)}}."""
    out, cur = {}, None
    for line in text.splitlines():
        m = re.search(r"actor (\d+)-(\d+)-\d+-(\d+)", line)
        if m:
            cur = out.setdefault(f"{m.group(1)}-{m.group(2)}-{m.group(3)}", {})
            continue
        m = re.match(r"(\S.*?)\s{2,}([\d.]+) us\s+[\d.]+ us\s+[\d.]+ us\s*(\d*)", line)
        if m and cur is not None:
            cur[m.group(1).strip()] = (float(m.group(2)), float(m.group(3) or "nan"))
    return out


rust = sections(read("learn.txt"))
torch = {**sections(read("torch_ref.txt")), **sections(read("torch_default.txt"))}


def macs(key):
    d, h, a = (int(x) for x in key.split("-"))
    return (d * h + h * h + h * a) + (d * h + h * h + h)  # actor + critic per sample


def peak_gflops():
    cores = os.cpu_count() or 1
    mhz = 0.0
    flags = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("cpu MHz") and not mhz:
            mhz = float(line.split(":")[1])
        if line.startswith("flags") and not flags:
            flags = line
    # FLOPs per cycle per core: 2 FMA units x lanes x 2 (AVX-512: 16 lanes, AVX2: 8).
    per_cycle = 64 if "avx512f" in flags else 32
    return cores * mhz * 1e-3 * per_cycle, cores, mhz, per_cycle


peak, cores, mhz, per_cycle = peak_gflops()
rows = []
sim = read("sim.txt")
for m in re.finditer(r"^\| (\d+) \| (\d+) \|", sim, re.M):
    rows.append((f"simulator, expert driving, {m.group(1)} thread(s)", f"{int(m.group(2)):,} ego steps/s", "highway-env 3-140 steps/s", ""))
m = re.search(r"peak RSS: ([\d.]+) MiB", sim)
if m:
    rows.append(("simulator, 1,024-world batch", f"peak RSS {m.group(1)} MiB", "", ""))
for key, label in [("276-128-20", "default heads"), ("64-256-40", "stack.md reference")]:
    r, t = rust.get(key, {}), torch.get(key, {})
    for name in ["inference act(), B=64", "inference act(), B=1024", "PPO minibatch update, B=512"]:
        if name not in r:
            continue
        rus, rsps = r[name]
        tus = t.get(name, (float("nan"),))[0]
        ratio = f"{tus / rus:.2f}x" if tus == tus else "-"
        extra = ""
        if name.startswith("PPO"):
            # forward + backward (weights and inputs) ~ 3x the forward multiply-adds, 2 FLOPs each
            gflops = 512 * macs(key) * 3 * 2 / (rus * 1e-6) / 1e9
            extra = f", {gflops:.0f} GFLOP/s = {100 * gflops / peak:.0f}% of peak"
        rows.append((f"{name} ({label} {key})", f"{rus:.0f} us ({rsps:,.0f} samples/s){extra}",
                     f"{tus:.0f} us" if tus == tus else "not installed", ratio))
metrics = [json.loads(l) for l in read("metrics.jsonl").splitlines() if l.strip()]
if metrics:
    sps = sorted(m["steps_per_second"] for m in metrics)[len(metrics) // 2]
    rows.append(("end-to-end refinement, default settings (median iteration)", f"{sps:,.0f} env steps/s", "SB3 PPO on highway-env: 30-60", ""))
if os.path.exists(report):
    r = json.load(open(report))
    rows.append(("whole `deltaplan run` (defaults)", f"{r['wall_seconds']:.0f} s wall, {r['env_steps']:,} RL env steps", "", ""))

print(f"\nmachine: {cores} cores at {mhz:.0f} MHz, peak {peak:.0f} GFLOP/s ({per_cycle} FLOP/cycle/core)\n")
print("| figure | deltaplan | PyTorch / peer | ratio (PyTorch time / ours) |")
print("|---|---|---|---:|")
for row in rows:
    print("| " + " | ".join(row) + " |")
