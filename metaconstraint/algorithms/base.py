"""What every algorithm offers the trainer, its typed config, and the registry of algorithms."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import Tensor

from metaconstraint.rl.buffer import MemberSampler


class AlgorithmConfig(BaseModel):
    """Hyperparameters of an algorithm; defaults are the paper's. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def for_dataset(self, dataset: str) -> "AlgorithmConfig":
        """This config as it applies to ``dataset`` (presets resolved: :mod:`metaconstraint.algorithms.presets`)."""
        return self


def config_keys(config: type[AlgorithmConfig]) -> set[str]:
    """The keys a config accepts: its field names and the older names it still reads (aliases)."""
    keys = set(config.model_fields)
    for info in config.model_fields.values():
        alias = info.validation_alias
        if alias is not None:
            keys.update(choice for choice in getattr(alias, "choices", [alias]) if isinstance(choice, str))
    return keys


@dataclass(frozen=True)
class ProblemSpec:
    """Shapes of the problem: what an algorithm needs to build its networks."""

    observation_dim: int
    action_dim: int
    max_action: float
    total_steps: int  # the run's --steps (schedules tied to the run length read it)


class Algorithm(ABC):
    """One consistent surface: ``init_state``, ``update``, ``act``, ``constraint_scale``.

    State is a plain tree of tensors (leading member dimension ``M``) and Python numbers, so it
    is checkpointed as it is.
    """

    name: ClassVar[str]
    Config: ClassVar[type[AlgorithmConfig]]
    member_fields: ClassVar[tuple[str, ...]] = ()
    """Scalar config fields that may take a different value in each member (:meth:`set_member_values`)."""
    scale = None
    """The constraint scale the actor objective reads (:mod:`metaconstraint.algorithms.adaptive`:
    fixed or learned), or ``None`` for a method without one (BC)."""

    def __init__(self, config: AlgorithmConfig, spec: ProblemSpec, num_members: int, device: torch.device):
        self.config = config
        self.spec = spec
        self.num_members = num_members
        self.device = device
        self.member_values: dict[str, list[float]] = {}
        self._member_tensors: dict[str, Tensor] = {}

    def set_member_values(self, values: dict[str, list[float]]) -> None:
        """Give each member its own value of scalar config fields (``{field: [value of member k]}``):
        hyperparameter members, trained as one vectorised computation beside the seeds. Only
        :attr:`member_fields` may vary; call before :meth:`init_state` and :meth:`compile`."""
        unsupported = sorted(set(values) - set(self.member_fields))
        if unsupported:
            supported = ", ".join(self.member_fields) or "none"
            raise ValueError(
                f"{self.name} cannot vary {', '.join(unsupported)} between the members of one run (supported: "
                f"{supported}); sweep it as separate runs instead."
            )
        for field_name, field_values in values.items():
            if len(field_values) != self.num_members:
                raise ValueError(f"{field_name}: {len(field_values)} values for {self.num_members} members.")
        self.member_values = {k: [float(v) for v in vs] for k, vs in values.items()}
        self._member_tensors = {
            k: torch.tensor(vs, dtype=torch.get_default_dtype(), device=self.device) for k, vs in self.member_values.items()
        }

    def member_scalar(self, field_name: str) -> Tensor:
        """The config field ``field_name`` per member, ``(M,)``: the members' own values where they
        differ (:meth:`set_member_values`), else the config's value for all."""
        values = self._member_tensors.get(field_name)
        if values is not None:
            return values
        return torch.full((self.num_members,), float(getattr(self.config, field_name)), device=self.device)

    @abstractmethod
    def init_state(self, seeds: list[int]) -> dict[str, Any]: ...

    @abstractmethod
    def update(self, state: dict[str, Any], sampler: MemberSampler, iteration: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """One iteration (1-based ``iteration``); metrics are ``(M,)`` device tensors."""

    @abstractmethod
    def act(self, state: dict[str, Any], observations: Tensor) -> Tensor:
        """Deterministic actions ``(M, E, A)`` for normalised observations ``(M, E, obs_dim)``."""

    @torch.no_grad()
    def explore(self, state: dict[str, Any], observations: Tensor, noise_std: float, sampler: MemberSampler) -> Tensor:
        """Actions for collecting data online, ``(M, E, A)``: the deterministic action plus Gaussian
        noise of std ``noise_std * max_action`` (TD3's exploration), clipped to the action bounds.
        The noise comes from each member's own generator in ``sampler``."""
        actions = self.act(state, observations)
        max_action = self.spec.max_action
        noise = sampler.normal(*actions.shape[1:]) * (noise_std * max_action)
        return (actions + noise).clamp(-max_action, max_action)

    def constraint_scale(self, state: dict[str, Any]) -> Tensor | None:
        """The learned constraint scale ``(M,)`` (ASPC's alpha), or ``None`` for fixed-scale methods."""
        if self.scale is None or not self.scale.learned:
            return None
        return self.scale.values(state)[self.scale.name]

    def meta_parameters(self, state: dict[str, Any]) -> dict[str, Tensor]:
        """Learned meta-parameters by name, ``(M,)`` each (empty for fixed-scale methods)."""
        if self.scale is None or not self.scale.learned:
            return {}
        return self.scale.values(state)

    def compile(self) -> bool:
        """Compile hot per-member functions with ``torch.compile`` (the run option ``compile``);
        returns whether anything was compiled. Default: nothing (the eager path)."""
        return False

    @property
    def batch_size(self) -> int:
        return self.config.batch_size


ALGORITHMS: dict[str, type[Algorithm]] = {}


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    ALGORITHMS[cls.name] = cls
    return cls


def define_algorithm(name: str, base: str | type[Algorithm], **defaults: Any) -> type[Algorithm]:
    """Register ``name`` as the algorithm ``base`` with other config defaults: an algorithm as a
    configuration, naming e.g. its ``objective``, ``outer_losses`` and meta-parameter settings
    (``alpha``, ``scale_lr``, ...). Keys the run gives still override these defaults.

    >>> define_algorithm("aspc-l1-only", "aspc", outer_losses=["l1"])  # doctest: +SKIP
    """
    base_cls = ALGORITHMS[base] if isinstance(base, str) else base
    if not (isinstance(base_cls, type) and issubclass(base_cls, Algorithm)):
        raise TypeError(f"define_algorithm: base must be an algorithm name or class, got {base!r}")
    base_cls.Config(**defaults)  # the defaults themselves must validate: fail here, not at the first run

    def fill_defaults(cls, data):
        return {**defaults, **data} if isinstance(data, dict) else data

    title = "".join(part.capitalize() for part in name.replace("_", "-").split("-"))
    config = type(
        f"{title}Config",
        (base_cls.Config,),
        {"__module__": base_cls.__module__, "__doc__": f"{base_cls.Config.__name__} with defaults {defaults}.",
         "_defaults": model_validator(mode="before")(classmethod(fill_defaults))},
    )
    algorithm = type(title, (base_cls,), {"name": name, "Config": config, "__module__": base_cls.__module__})
    return register_algorithm(algorithm)
