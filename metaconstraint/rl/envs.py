"""Building environments without the litter some of them leave behind."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym


def without_model_file(env: gym.Env) -> gym.Env:
    """``env`` after deleting the MuJoCo model file a gymnasium-robotics maze writes on construction
    (``/tmp/ant_maze<time>.xml``, one per environment, never removed); MuJoCo has loaded it by then."""
    model_file = getattr(env.unwrapped, "tmp_xml_file_path", None)
    if model_file:
        Path(model_file).unlink(missing_ok=True)
    return env


def make_env(spec, **kwargs) -> gym.Env:
    """``gym.make(spec, **kwargs)``, leaving no model file behind (:func:`without_model_file`)."""
    return without_model_file(gym.make(spec, **kwargs))
