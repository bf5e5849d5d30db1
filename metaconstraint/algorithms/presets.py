r"""Named settings of the baselines, resolved per dataset: "as reported" made one config key.

A baseline tuned per dataset family (ReBRAC's and IQL's Adroit settings in CORL) offers them as a
``preset``. ``preset = "auto"`` (the default) picks the preset of the dataset's family; a named
preset is used as it is. Resolution happens once, when the run's config is built
(:func:`metaconstraint.config.build_configs` calls ``for_dataset``): every key the preset sets takes
the preset's value *unless the run gave that key itself*, and the config records the preset's name
(never ``auto``) beside every value, so ``config.toml`` says what ran and reads back unchanged.
The report groups runs by ``algorithm (preset)``: runs written before presets existed have no
``preset`` key and keep their plain label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from pydantic import Field, field_validator

from metaconstraint.algorithms.base import AlgorithmConfig
from metaconstraint.suggest import unknown_name

ADROIT_TASKS = ("pen", "door", "hammer", "relocate")
_ID = re.compile(r"(?:^|/)(?P<task>[A-Za-z0-9_]+)/(?P<quality>[A-Za-z0-9_-]+?)(?:-v\d+)?$")


def dataset_task(dataset: str) -> tuple[str | None, str | None]:
    """``(task, quality)`` of a dataset name: ``"pen-human"``, ``"D4RL/pen/human-v2"`` and
    ``"dapg/pen/human-v0"`` give ``("pen", "human")``; a combined ``a+b`` reads its first part;
    ``(None, None)`` when the name says neither."""
    from metaconstraint.rl.data import UnknownDatasetError, resolve_dataset_id

    name = dataset.split("+")[0].strip()
    try:
        name = resolve_dataset_id(name)
    except UnknownDatasetError:
        pass  # the run reports an unknown dataset itself; here the name is only read
    match = _ID.search(name)
    if match is None:
        return None, None
    return match.group("task").lower(), match.group("quality").lower()


def is_adroit(dataset: str) -> bool:
    return dataset_task(dataset)[0] in ADROIT_TASKS


@dataclass(frozen=True)
class Preset:
    """``values``: keys every dataset gets; ``per_dataset``: ``"task-quality" -> keys`` for the datasets
    the source tuned; ``fallback(task, quality)``: the entry a dataset outside the table uses (or
    ``None``: then the run must give those keys itself)."""

    name: str
    description: str
    values: dict[str, Any]
    per_dataset: dict[str, dict[str, Any]] = field(default_factory=dict)
    fallback: Callable[[str | None, str | None], str | None] | None = None

    def values_for(self, dataset: str, given: set[str]) -> dict[str, Any]:
        if not self.per_dataset:
            return dict(self.values)
        task, quality = dataset_task(dataset)
        entry = f"{task}-{quality}"
        if entry not in self.per_dataset and self.fallback is not None:
            entry = self.fallback(task, quality) or entry
        if entry in self.per_dataset:
            return {**self.values, **self.per_dataset[entry]}
        needed = sorted({key for values in self.per_dataset.values() for key in values} - given)
        if needed:
            raise ValueError(
                f"preset '{self.name}' has no values for dataset '{dataset}' (it covers {', '.join(self.per_dataset)}); "
                f"give {', '.join(needed)} yourself, or choose another preset."
            )
        return dict(self.values)


def expert_entry_of_task(task: str | None, quality: str | None) -> str | None:
    """An Adroit set the source did not tune takes its task's expert entry (``dapg/pen/mixed-v0`` ->
    ``pen-expert``): the pen sets made here are expert demonstrations with noise or random episodes."""
    return f"{task}-expert" if task in ADROIT_TASKS else None


class PresetConfig(AlgorithmConfig):
    """An algorithm config with named presets; subclasses set ``PRESETS`` and ``auto_preset``."""

    PRESETS: ClassVar[dict[str, Preset]] = {}
    preset: str = Field("auto", description="Named settings (see the algorithm's docs); auto: by the dataset's family.")

    @classmethod
    def auto_preset(cls, dataset: str) -> str:
        raise NotImplementedError

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name != "auto" and name not in cls.PRESETS:
            raise ValueError(unknown_name("preset", name, ["auto", *cls.PRESETS]))
        return name

    def for_dataset(self, dataset: str) -> "PresetConfig":
        """This config with the preset resolved for ``dataset``: keys given explicitly win."""
        name = self.auto_preset(dataset) if self.preset == "auto" else self.preset
        given = self.model_fields_set - {"preset"}
        values = self.PRESETS[name].values_for(dataset, given)
        explicit = {key: getattr(self, key) for key in given}
        return type(self)(**{**values, **explicit, "preset": name})
