"""The yardstick: TD3+BC and ASPC written the straightforward eager way, as the paper's code is.

Separate ``nn.Module`` critics, one ``torch.optim.Adam`` per module, target networks updated
parameter by parameter, and for ASPC a second-order graph (``create_graph=True``) on *every* actor
step, with alpha stepped every ``alpha_interval`` actor steps. Same layer shapes and batch as the
package's update; used only by ``bench_update.py`` to measure how far we are from this baseline.
"""

from __future__ import annotations

import copy

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
    """TD3+BC (or ASPC with ``adaptive=True``) over plain modules and per-module optimizers."""

    def __init__(self, obs_dim: int, action_dim: int, adaptive: bool = False, device="cpu", alpha: float = 2.5,
                 lr: float = 3e-4, alpha_lr: float = 2e-3, alpha_interval: int = 10):
        self.actor = Actor(obs_dim, action_dim).to(device)
        self.critic1 = robust_critic(obs_dim, action_dim).to(device)
        self.critic2 = robust_critic(obs_dim, action_dim).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic1_target = copy.deepcopy(self.critic1)
        self.critic2_target = copy.deepcopy(self.critic2)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic1_opt = torch.optim.Adam(self.critic1.parameters(), lr=lr)
        self.critic2_opt = torch.optim.Adam(self.critic2.parameters(), lr=lr)
        self.adaptive = adaptive
        self.lr = lr
        self.raw_alpha = torch.tensor(float(torch.log(torch.expm1(torch.tensor(alpha)))), device=device, requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.raw_alpha], lr=alpha_lr)
        self.alpha_interval = alpha_interval
        self.actor_steps = 0
        self.iteration = 0

    def _actor_loss(self, params, states, actions, alpha):
        policy_actions = functional_call(self.actor, params, (states,))
        q = self.critic1(torch.cat([states, policy_actions], -1))
        scale = alpha / q.abs().mean().detach()
        return -scale * q.mean() + F.mse_loss(policy_actions, actions), policy_actions, q

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
        if self.iteration % 2:
            return
        params = dict(self.actor.named_parameters())
        alpha = F.softplus(self.raw_alpha) if self.adaptive else torch.tensor(2.5, device=states.device)
        actor_loss, policy_actions, q = self._actor_loss(params, states, actions, alpha)
        if self.adaptive:  # the paper's code: a second-order graph on every actor step
            grads = torch.autograd.grad(actor_loss, list(params.values()), create_graph=True)
            updated = {name: p - self.lr * g for (name, p), g in zip(params.items(), grads)}
            outer, updated_actions, updated_q = self._actor_loss(updated, states, actions, alpha)
            outer = outer + (updated_q - q.detach()).pow(2).mean() + (F.mse_loss(updated_actions, actions) - F.mse_loss(policy_actions, actions).detach()).pow(2)
            self.actor_steps += 1
            self.alpha_opt.zero_grad()
            self.actor_opt.zero_grad()
            outer.backward(inputs=[self.raw_alpha])
            if self.actor_steps % self.alpha_interval == 0:
                self.alpha_opt.step()
            for p, g in zip(params.values(), grads):
                p.grad = g.detach()
        else:
            self.actor_opt.zero_grad()
            actor_loss.backward(inputs=list(params.values()))
        self.actor_opt.step()
        with torch.no_grad():
            for net, target in ((self.actor, self.actor_target), (self.critic1, self.critic1_target), (self.critic2, self.critic2_target)):
                for p, tp in zip(net.parameters(), target.parameters()):
                    tp.mul_(0.995).add_(0.005 * p)
