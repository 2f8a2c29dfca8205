#!/usr/bin/env python3
"""PyTorch side of `cargo bench -p deltaplan-learn` (crates/learn/benches/ppo.rs).

Same workload as shared/research/stack.md and the Rust bench: actor 64-256-256-40 (tanh),
critic 64-256-256-1 (tanh), learned state-independent log-std; 2 threads.
- PPO minibatch update, B=512: forward both, Normal log-prob, clipped surrogate, clipped value
  loss, entropy, KL to N(0, sigma_ref), backward, clip_grad_norm_(0.5), AdamW(eps=1e-5);
- inference at B=1, 64, 1024 under no_grad: forward both, sample, log-prob, tanh squash.
Median of many iterations after warm-up. Prints the same table as the Rust bench.

Usage: python python/bench_torch.py [--fused]   (skips with a message when torch is missing)
"""

import argparse
import math
import sys
import time

try:
    import torch
    from torch import nn
    from torch.distributions import Normal, kl_divergence
except ImportError:
    print("bench_torch.py: torch is not installed; skipping the PyTorch benchmark")
    sys.exit(0)

D, A, H = 64, 40, 256


def layer_init(layer, std=math.sqrt(2)):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class Agent(nn.Module):
    def __init__(self):
        super().__init__()
        self.critic = nn.Sequential(layer_init(nn.Linear(D, H)), nn.Tanh(), layer_init(nn.Linear(H, H)), nn.Tanh(),
                                    layer_init(nn.Linear(H, 1), std=1.0))
        self.actor_mean = nn.Sequential(layer_init(nn.Linear(D, H)), nn.Tanh(), layer_init(nn.Linear(H, H)), nn.Tanh(),
                                        layer_init(nn.Linear(H, A), std=0.01))
        self.actor_logstd = nn.Parameter(torch.full((1, A), -0.5))


def timeit(fn, warmup, iters, rounds=15):
    """Median of `iters` calls, best of `rounds` rounds (same rule as the Rust bench)."""
    for _ in range(warmup):
        fn()
    best = None
    for _ in range(rounds):
        ts = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e6)
        ts.sort()
        r = (ts[iters // 2], ts[iters // 10], ts[iters * 9 // 10])
        if best is None or r[0] < best[0]:
            best = r
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fused", action="store_true", help="AdamW(fused=True), PyTorch's fastest setting")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dims", default="64,256,40",
                    help="input,hidden,actions: 64,256,40 is stack.md's reference; 276,128,20 deltaplan's default heads")
    args = ap.parse_args()
    global D, H, A
    D, H, A = (int(x) for x in args.dims.split(","))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    agent = Agent()
    opt = torch.optim.AdamW(agent.parameters(), lr=3e-4, eps=1e-5, weight_decay=0.0,
                            **({"fused": True} if args.fused else {}))
    print(f"PyTorch {torch.__version__} PPO benchmark: actor {D}-{H}-{H}-{A}, critic {D}-{H}-{H}-1, tanh; "
          f"threads {torch.get_num_threads()}; AdamW fused={args.fused}")

    B = 512
    obs = torch.randn(B, D)
    with torch.no_grad():
        mu = agent.actor_mean(obs)
        std = agent.actor_logstd.exp().expand_as(mu)
        probs = Normal(mu, std)
        u = probs.sample()
        logp = probs.log_prob(u).sum(1) + 0.1 * torch.randn(B)
        values = agent.critic(obs).view(-1)
    adv = torch.randn(B)
    returns = values + torch.randn(B)
    clip, ent_coef, vf_coef, beta, ref_std = 0.2, 0.01, 0.5, 0.01, math.exp(-0.5)

    def update():
        mu = agent.actor_mean(obs)
        std = agent.actor_logstd.expand_as(mu).exp()
        probs = Normal(mu, std)
        newlogprob = probs.log_prob(u).sum(1)
        entropy = probs.entropy().sum(1)
        newvalue = agent.critic(obs).view(-1)
        logratio = newlogprob - logp
        ratio = logratio.exp()
        with torch.no_grad():
            approx_kl = ((ratio - 1) - logratio).mean()
            clipfrac = ((ratio - 1.0).abs() > clip).float().mean()
        a = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = torch.max(-a * ratio, -a * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
        v_unclipped = (newvalue - returns) ** 2
        v_clipped = values + torch.clamp(newvalue - values, -clip, clip)
        v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - returns) ** 2).mean()
        kl = kl_divergence(probs, Normal(torch.zeros_like(mu), torch.full_like(std, ref_std))).sum(1).mean()
        loss = pg_loss - ent_coef * entropy.mean() + vf_coef * v_loss + beta * kl
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
        opt.step()
        return approx_kl, clipfrac

    rows = [("PPO minibatch update, B=512", timeit(update, 20, 40), B)]

    for bi in (1, 64, 1024):
        x = torch.randn(bi, D)

        def act():
            with torch.no_grad():
                mu = agent.actor_mean(x)
                v = agent.critic(x)
                std = agent.actor_logstd.exp().expand_as(mu)
                probs = Normal(mu, std)
                u = probs.sample()
                lp = probs.log_prob(u).sum(1)
                delta = 0.5 * torch.tanh(u)
                return delta, lp, v

        rows.append((f"inference act(), B={bi}", timeit(act, 50, 40 if bi > 256 else 200), bi))

    print(f"{'workload':<34} {'median':>11} {'p10':>11} {'p90':>11} {'samples/s':>14}")
    for name, (med, p10, p90), n in rows:
        print(f"{name:<34} {med:>8.1f} us {p10:>8.1f} us {p90:>8.1f} us {n / (med * 1e-6):>14.0f}")


if __name__ == "__main__":
    main()
