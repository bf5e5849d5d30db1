"""The yardstick: TD3+BC and ASPC written the straightforward eager way, as the paper's code is.

Structure of the paper's released ASPC code (Colin-Jing/ASPC, ``algorithms/offline/aspc.py``):
separate ``nn.Module`` critics, one ``torch.optim.Adam`` per critic, target networks updated
parameter by parameter, and on *every* actor step a second-order graph (``create_graph=True``)
through a functional (differentiable) Adam step of the actor, which is then copied into the actor;
the outer losses and alpha's Adam step (lr decayed by ``ExponentialLR``) run every
``alpha_interval`` actor steps. Like the paper's code it reads ``alpha`` and ``mean Q`` back to the
host on every actor step (its logging). The *mathematics* is the project's (``l1 l2 l3`` in their
paper form, Adam's virtual step with its live moments), so the same numbers come out as from
``metaconstraint``'s update on the same batches (``tests/test_speed_equivalence.py``).

Used by ``bench_update.py`` (speed yardstick) and by the equivalence tests.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F


def robust_critic(obs_dim: int, action_dim: int, hidden: int = 256) -> nn.Module:
    layers, width = [], obs_dim + action_dim
    for _ in range(3):
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.LayerNorm(hidden)]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 1))


class Actor(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, max_action: float = 1.0, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, action_dim))
        self.max_action = max_action

    def forward(self, states):
        return self.max_action * torch.tanh(self.net(states))


class EagerTD3BC:
    """TD3+BC (or ASPC with ``adaptive=True``) over plain modules and per-module optimizers.

    ``decay_updates``: alpha updates over which alpha's lr falls to ``final_lr_fraction``
    (the paper: 1M iterations / 20 = 50,000).
    """

    def __init__(self, obs_dim: int, action_dim: int, adaptive: bool = False, device="cpu", alpha: float = 2.5,
                 lr: float = 3e-4, alpha_lr: float = 2e-3, alpha_interval: int = 10, policy_freq: int = 2,
                 decay_updates: int = 50_000, final_lr_fraction: float = 0.01):
        self.actor = Actor(obs_dim, action_dim).to(device)
        self.critic1 = robust_critic(obs_dim, action_dim).to(device)
        self.critic2 = robust_critic(obs_dim, action_dim).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic1_target = copy.deepcopy(self.critic1)
        self.critic2_target = copy.deepcopy(self.critic2)
        self.critic1_opt = torch.optim.Adam(self.critic1.parameters(), lr=lr)
        self.critic2_opt = torch.optim.Adam(self.critic2.parameters(), lr=lr)
        self.adaptive = adaptive
        self.lr = lr
        self.policy_freq = policy_freq
        self.fixed_alpha = alpha
        if adaptive:  # the actor's Adam written out (differentiable), as torchopt's in the paper's code
            self.actor_m = [torch.zeros_like(p) for p in self.actor.parameters()]
            self.actor_v = [torch.zeros_like(p) for p in self.actor.parameters()]
            self.actor_count = 0
        else:
            self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.raw_alpha = nn.Parameter(torch.log(torch.expm1(torch.tensor(alpha, device=device))))
        self.alpha_opt = torch.optim.Adam([self.raw_alpha], lr=alpha_lr)
        self.alpha_schedule = torch.optim.lr_scheduler.ExponentialLR(self.alpha_opt, gamma=final_lr_fraction ** (1 / decay_updates))
        self.alpha_interval = alpha_interval
        self.iteration = 0
        self.log: dict[str, float] = {}
        self.alpha_grads: list[torch.Tensor] = []  # d(l1 + l2 + l3)/d rho of every alpha update

    def _virtual_adam(self, params, grads):
        """``theta~ = theta - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`` with the live moments."""
        t = self.actor_count + 1
        m = [0.9 * mi + 0.1 * g for mi, g in zip(self.actor_m, grads)]
        v = [0.999 * vi + 0.001 * g * g for vi, g in zip(self.actor_v, grads)]
        step, bias2 = self.lr / (1 - 0.9**t), math.sqrt(1 - 0.999**t)
        # sqrt with derivative 0 at v = 0 (a dead ReLU unit's weights have exactly zero gradient;
        # plain sqrt makes alpha's meta-gradient NaN there); the value is sqrt(v) unchanged
        roots = [torch.where(vi > 0, torch.where(vi > 0, vi, torch.ones_like(vi)).sqrt(), torch.zeros_like(vi)) for vi in v]
        updated = [p - step * mi / (r / bias2 + 1e-8) for p, mi, r in zip(params, m, roots)]
        return updated, m, v

    def update(self, batch, noise=None) -> None:
        """One iteration on ``(states, actions, rewards, next_states, dones)``; ``noise``: the
        standard-normal smoothing draw (drawn here when not given)."""
        self.iteration += 1
        states, actions, rewards, next_states, dones = batch
        with torch.no_grad():
            noise = ((torch.randn_like(actions) if noise is None else noise) * 0.2).clamp(-0.5, 0.5)
            next_actions = (self.actor_target(next_states) + noise).clamp(-1.0, 1.0)
            next_in = torch.cat([next_states, next_actions], -1)
            target_q = torch.min(self.critic1_target(next_in), self.critic2_target(next_in)).squeeze(-1)
            target = rewards + 0.99 * (1 - dones) * target_q
        current = torch.cat([states, actions], -1)
        loss = F.mse_loss(self.critic1(current).squeeze(-1), target) + F.mse_loss(self.critic2(current).squeeze(-1), target)
        self.critic1_opt.zero_grad()
        self.critic2_opt.zero_grad()
        loss.backward()
        self.critic1_opt.step()
        self.critic2_opt.step()
        if self.iteration % self.policy_freq:
            return
        if self.adaptive:
            self._adaptive_actor_step(states, actions)
        else:
            pi = self.actor(states)
            q = self.critic1(torch.cat([states, pi], -1)).squeeze(-1)
            actor_loss = -self.fixed_alpha / q.abs().mean().detach() * q.mean() + F.mse_loss(pi, actions)
            self.actor_opt.zero_grad()
            actor_loss.backward(inputs=list(self.actor.parameters()))
            self.actor_opt.step()
        with torch.no_grad():
            for net, target in ((self.actor, self.actor_target), (self.critic1, self.critic1_target), (self.critic2, self.critic2_target)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.copy_((1 - 0.005) * tp + 0.005 * p)

    def _adaptive_actor_step(self, states, actions) -> None:
        names = [n for n, _ in self.actor.named_parameters()]
        params = [p for _, p in self.actor.named_parameters()]
        alpha = F.softplus(self.raw_alpha)
        self.log["alpha"] = alpha.item()
        pi = functional_call(self.actor, dict(zip(names, params)), (states,))
        q = self.critic1(torch.cat([states, pi], -1)).squeeze(-1)
        self.log["q"] = q.mean().item()
        actor_loss = -alpha / q.abs().mean().detach() * q.mean() + F.mse_loss(pi, actions)
        # the paper's code: a second-order graph on every actor step
        grads = torch.autograd.grad(actor_loss, params, create_graph=True)
        updated, m, v = self._virtual_adam(params, grads)
        if self.iteration % (self.policy_freq * self.alpha_interval) == 0:
            pi_new = functional_call(self.actor, dict(zip(names, updated)), (states,))
            q_new = self.critic1(torch.cat([states, pi_new], -1)).squeeze(-1)
            l1 = -alpha.detach() * q_new.mean() / q_new.abs().mean().detach() + F.mse_loss(pi_new, actions)
            l2 = (q_new.mean() - q.mean().detach()) ** 2
            bc = (pi - actions).pow(2).mean(-1).detach()
            bc_new = (pi_new - actions).pow(2).mean(-1)
            l3 = l2.detach() * bc.max() * (bc - bc_new).abs().max()
            self.alpha_opt.zero_grad()
            (l1 + l2 + l3).backward(inputs=[self.raw_alpha])
            self.alpha_grads.append(self.raw_alpha.grad.detach().clone())
            self.alpha_opt.step()
            self.alpha_schedule.step()
        with torch.no_grad():
            for p, new in zip(params, updated):
                p.copy_(new)
        self.actor_m = [x.detach() for x in m]
        self.actor_v = [x.detach() for x in v]
        self.actor_count += 1
