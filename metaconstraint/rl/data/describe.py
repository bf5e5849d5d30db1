"""What ``metaconstraint datasets info`` shows about a dataset."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from metaconstraint.rl.data.info import dataset_info, normalized_score
from metaconstraint.rl.data.loading import CombinedDataset, as_dataset
from metaconstraint.rl.data.transitions import load_transitions


def describe_dataset(name) -> dict[str, Any]:
    """What ``datasets info`` shows: size, spaces, evaluation spec, reference scores, and the
    distribution of episode returns (raw rewards, no offset), normalised too where references exist."""
    dataset = as_dataset(name)
    info = dataset_info(dataset)
    parts = dataset.parts if isinstance(dataset, CombinedDataset) else (dataset,)
    returns = load_transitions(dataset, reward_offset=0.0).episode_returns
    quantiles = (0.0, 0.25, 0.5, 0.75, 1.0)

    def stats(values: np.ndarray) -> dict[str, float]:
        if values.size == 0:
            return {}
        q = np.quantile(values, quantiles)
        return {"mean": float(values.mean()), "std": float(values.std()), "min": float(q[0]), "q25": float(q[1]),
                "median": float(q[2]), "q75": float(q[3]), "max": float(q[4])}

    counts, edges = np.histogram(returns, bins=10) if returns.size else (np.zeros(0), np.zeros(0))
    has_refs = info.ref_min_score is not None and info.ref_max_score is not None and info.ref_min_score != info.ref_max_score
    metadata = parts[0].storage.metadata
    return {
        "dataset_id": info.dataset_id,
        "parts": [p.id for p in parts],
        "folders": [str(pathlib.Path(p.storage.data_path).parent) for p in parts],
        "episodes": info.total_episodes,
        "steps": info.total_steps,
        "observation_space": str(parts[0].observation_space),
        "observation_dim": info.observation_dim,
        "observation_keys": list(info.observation_keys),
        "action_space": str(parts[0].action_space),
        "env_id": info.env_id,
        "eval_horizon": info.eval_horizon,
        "ref_min_score": info.ref_min_score,
        "ref_max_score": info.ref_max_score,
        "reward_offset": info.reward_offset,
        "returns": stats(returns),
        "normalized_returns": stats(normalized_score(info, returns)) if has_refs else {},
        "histogram": {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]},
        "algorithm_name": metadata.get("algorithm_name"),
        "description": metadata.get("description"),
    }
