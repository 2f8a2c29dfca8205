#!/usr/bin/env python3
"""PyTorch reference for deltaplan-learn's PPO minibatch step (CleanRL semantics).

Builds the same actor/critic as `deltaplan_learn::ActorCritic` in float32 PyTorch, runs two PPO
minibatch steps (loss, backward, global grad-norm clip, AdamW) on one fixed minibatch, and writes
`crates/learn/tests/fixtures/ppo_parity.safetensors` with the inputs, initial weights, expected
loss terms, gradients (before and after clipping) and parameters after each step. The Rust test
`tests/parity.rs` replays it and asserts agreement within 1e-5.

Semantics mirrored (see crates/learn/src/ppo.rs):
  u ~ N(mu(s), exp(log_std)) with state-independent log_std; logp is the Gaussian log-density of
  u (the tanh-squash Jacobian cancels in the ratio); per-minibatch advantage normalisation with
  torch.std; clipped surrogate; clipped value loss; Gaussian entropy bonus; beta * KL(pi || N(0,
  sigma_ref)) computed with torch.distributions.kl_divergence (an independent implementation of
  the closed form); clip_grad_norm_ over all parameters; AdamW with two parameter groups (weight
  decay on network weights and biases, none on log_std), eps 1e-5, foreach=False.

Usage: python python/torch_parity.py [--out PATH]   (needs torch, numpy, safetensors)
"""

import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file
from torch import nn
from torch.distributions import Normal, kl_divergence

D, H, A, B = 12, 16, 6, 32
CFG = dict(
    clip_coef=0.2,
    vf_coef=0.5,
    ent_coef=0.01,
    clip_vloss=True,
    norm_adv=True,
    max_grad_norm=0.5,
    beta=0.05,
    lr=1e-2,
    weight_decay=0.01,
    adam_eps=1e-5,
    log_std_init=-0.5,
    ref_log_std=-1.0,
)


def layer_init(layer, std=math.sqrt(2), bias_const=0.0):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """CleanRL's continuous-action Agent, with hidden width H and two hidden layers."""

    def __init__(self):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(D, H)), nn.Tanh(),
            layer_init(nn.Linear(H, H)), nn.Tanh(),
            layer_init(nn.Linear(H, 1), std=1.0),
        )
        # A larger output gain than CleanRL's 0.01 so that mu, ratios and KL are far from trivial.
        self.actor_mean = nn.Sequential(
            layer_init(nn.Linear(D, H)), nn.Tanh(),
            layer_init(nn.Linear(H, H)), nn.Tanh(),
            layer_init(nn.Linear(H, A), std=0.5),
        )
        self.actor_logstd = nn.Parameter(torch.full((1, A), CFG["log_std_init"]))

    def dist_and_value(self, x):
        mu = self.actor_mean(x)
        std = self.actor_logstd.expand_as(mu).exp()
        return Normal(mu, std), self.critic(x).view(-1)


def named_params(agent):
    return {k: v for k, v in agent.named_parameters()}


def ppo_step(agent, opt, mb):
    """One CleanRL minibatch step; returns (stats, raw grads, clipped grads)."""
    c = CFG["clip_coef"]
    probs, newvalue = agent.dist_and_value(mb["obs"])
    newlogprob = probs.log_prob(mb["u"]).sum(1)
    entropy = probs.entropy().sum(1)
    logratio = newlogprob - mb["old_logp"]
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clip_frac = ((ratio - 1.0).abs() > c).float().mean()
    adv = mb["advantages"]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss1 = -adv * ratio
    pg_loss2 = -adv * torch.clamp(ratio, 1 - c, 1 + c)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    v_unclipped = (newvalue - mb["returns"]) ** 2
    v_clipped = mb["old_values"] + torch.clamp(newvalue - mb["old_values"], -c, c)
    v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - mb["returns"]) ** 2).mean()
    entropy_loss = entropy.mean()
    ref = Normal(torch.zeros_like(probs.loc), torch.full_like(probs.scale, math.exp(CFG["ref_log_std"])))
    kl_sft = kl_divergence(probs, ref).sum(1).mean()
    loss = pg_loss - CFG["ent_coef"] * entropy_loss + CFG["vf_coef"] * v_loss + CFG["beta"] * kl_sft
    opt.zero_grad()
    loss.backward()
    raw = {k: p.grad.detach().clone() for k, p in agent.named_parameters()}
    norm = nn.utils.clip_grad_norm_(agent.parameters(), CFG["max_grad_norm"])
    clipped = {k: p.grad.detach().clone() for k, p in agent.named_parameters()}
    opt.step()
    stats = torch.stack([
        loss.detach(), pg_loss.detach(), v_loss.detach(), entropy_loss.detach(), kl_sft.detach(),
        approx_kl, old_approx_kl, clip_frac, norm.detach(),
    ]).float()
    return stats, raw, clipped


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "crates", "learn", "tests", "fixtures", "ppo_parity.safetensors"))
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    agent = Agent()
    with torch.no_grad():  # non-zero biases so bias gradients and loading are exercised
        for name, p in agent.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    init = {k: v.detach().clone() for k, v in named_params(agent).items()}

    with torch.no_grad():
        obs = torch.randn(B, D)
        probs, value = agent.dist_and_value(obs)
        u = probs.sample()
        logp = probs.log_prob(u).sum(1)
        mb = dict(
            obs=obs,
            u=u,
            # Stale log-probs and values, as after an earlier epoch: ratios and value clipping bite.
            old_logp=logp + 0.3 * torch.randn(B),
            advantages=2.0 * torch.randn(B) + 0.5,
            returns=value + torch.randn(B),
            old_values=value + 0.3 * torch.randn(B),
        )
        mu = probs.loc.clone()

    decay = [p for n, p in agent.named_parameters() if n != "actor_logstd"]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": CFG["weight_decay"]},
            {"params": [agent.actor_logstd], "weight_decay": 0.0},
        ],
        lr=CFG["lr"], eps=CFG["adam_eps"], foreach=False,
    )

    tensors = {f"batch.{k}": v.contiguous() for k, v in mb.items()}
    tensors["expected.mu"] = mu.contiguous()
    tensors["expected.value"] = value.contiguous()
    tensors.update({f"init.{k}": v.contiguous() for k, v in init.items()})
    for step in (1, 2):
        stats, raw, clipped = ppo_step(agent, opt, mb)
        tensors[f"step{step}.stats"] = stats.contiguous()
        tensors.update({f"step{step}.grad.{k}": v.contiguous() for k, v in raw.items()})
        tensors.update({f"step{step}.clipped_grad.{k}": v.contiguous() for k, v in clipped.items()})
        tensors.update({f"step{step}.param.{k}": v.detach().clone().contiguous() for k, v in named_params(agent).items()})
        print(f"step {step}: loss={stats[0]:.6f} pg={stats[1]:.6f} v={stats[2]:.6f} ent={stats[3]:.6f} "
              f"kl_sft={stats[4]:.6f} approx_kl={stats[5]:.6f} clip_frac={stats[7]:.4f} norm={stats[8]:.6f}")

    meta = {k: json.dumps(v) for k, v in CFG.items()}
    meta.update(dims=json.dumps(dict(D=D, H=H, A=A, B=B)), torch_version=torch.__version__,
                stats_order=json.dumps(["loss", "pg_loss", "v_loss", "entropy", "kl_sft", "approx_kl",
                                        "old_approx_kl", "clip_frac", "grad_norm"]))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
