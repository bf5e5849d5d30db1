"""The offline data layer: names, roots, loading (local, offline, corrupt), transitions, scores."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from metaconstraint.rl.data import transitions
from metaconstraint.rl.data import (
    D4RL_SHORT_NAMES,
    DatasetError,
    DatasetUnavailableError,
    UnknownDatasetError,
    dataset_info,
    dataset_roots,
    find_local_dataset,
    known_datasets,
    load_dataset,
    load_transitions,
    make_eval_env,
    normalized_score,
    resolve_dataset_id,
)

from simulated import PEN_REFS


@pytest.fixture
def pen_human(monkeypatch, tmp_path, pen_human_root):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pen_human_root))
    monkeypatch.setenv("METACONSTRAINT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METACONSTRAINT_OFFLINE", "1")
    return pen_human_root


def copy_pen_human(pen_human_root: Path, root: Path) -> Path:
    """A private copy of the small pen-human set under ``root``; returns its main_data.hdf5."""
    target = root / "D4RL" / "pen" / "human-v2"
    shutil.copytree(pen_human_root / "D4RL" / "pen" / "human-v2", target)
    return target / "data" / "main_data.hdf5"


# ----------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "name, expected",
    [
        ("pen-human", "D4RL/pen/human-v2"),
        ("door-expert", "D4RL/door/expert-v2"),
        ("relocate-cloned", "D4RL/relocate/cloned-v2"),
        ("pen-human-v1", "D4RL/pen/human-v2"),
        ("hammer-human-v0", "D4RL/hammer/human-v2"),
        ("Pen-Human", "D4RL/pen/human-v2"),
        ("antmaze-umaze-diverse", "D4RL/antmaze/umaze-diverse-v1"),
        ("antmaze-large-play-v2", "D4RL/antmaze/large-play-v1"),
        ("maze2d-medium", "D4RL/pointmaze/medium-v2"),
        ("maze2d-large-dense", "D4RL/pointmaze/large-dense-v2"),
        ("pointmaze-open-dense", "D4RL/pointmaze/open-dense-v2"),
        ("kitchen-mixed", "D4RL/kitchen/mixed-v2"),
        ("D4RL/door/human-v2", "D4RL/door/human-v2"),
        ("dapg/pen/expert-v0", "dapg/pen/expert-v0"),
        ("mujoco/hopper/expert-v0", "mujoco/hopper/expert-v0"),
        ("D4RL/pointmaze/open-dense-v2", "D4RL/pointmaze/open-dense-v2"),
    ],
)
def test_names_resolve(name, expected):
    assert resolve_dataset_id(name) == expected


def test_short_name_table_covers_the_d4rl_families():
    assert len(D4RL_SHORT_NAMES) == 12 + 6 + 6 + 8 + 3  # Adroit, AntMaze, maze2d-*, pointmaze-*, Kitchen
    assert all(v.startswith("D4RL/") for v in D4RL_SHORT_NAMES.values())


@pytest.mark.parametrize(
    "name, suggestion",
    [
        ("pen-humen", "pen-human"),
        ("D4RL/pen/humn-v2", "D4RL/pen/human-v2"),
        ("d4rl/pen/human-v2", "D4RL/pen/human-v2"),
        ("antmaze-umaze-divers", "antmaze-umaze-diverse"),
        ("D4RL/pen", "D4RL/pen/human-v2"),
    ],
)
def test_typos_raise_with_the_right_suggestion(name, suggestion):
    with pytest.raises(UnknownDatasetError) as caught:
        resolve_dataset_id(name)
    message = str(caught.value)
    assert name in message and suggestion in message and "Did you mean" in message


@pytest.mark.parametrize("name", ["", "nonsense", "a//b-v0", "../x-v0"])
def test_bad_names_raise(name):
    with pytest.raises(UnknownDatasetError):
        resolve_dataset_id(name)


# ----------------------------------------------------------------------------------------- roots
def test_roots_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("METACONSTRAINT_HOME", str(tmp_path / "mc"))
    assert dataset_roots() == [tmp_path / "minari", tmp_path / "mc" / "datasets"]
    monkeypatch.delenv("MINARI_DATASETS_PATH")
    monkeypatch.delenv("METACONSTRAINT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dataset_roots() == [
        tmp_path / ".minari" / "datasets",
        tmp_path / ".cache" / "metaconstraint" / "datasets",
    ]


def test_the_second_root_is_searched_after_the_first(monkeypatch, tmp_path, pen_human_root):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("METACONSTRAINT_HOME", str(tmp_path / "home"))
    copy_pen_human(pen_human_root, tmp_path / "home" / "datasets")
    assert find_local_dataset("D4RL/pen/human-v2") == tmp_path / "home" / "datasets" / "D4RL" / "pen" / "human-v2"
    assert load_dataset("pen-human", download=False).total_steps == 500
    assert not (tmp_path / "empty").exists()  # looking never creates a root


def test_known_datasets_lists_short_names_and_local_sets(simulated_root):
    rows = known_datasets()  # the session's root holds door-human and two dapg sets, not pen-human
    assert ("pen-human", "D4RL/pen/human-v2", False) in rows
    assert ("door-human", "D4RL/door/human-v2", True) in rows
    assert ("", "dapg/pen/expert-v0", True) in rows
    assert "dapg/pen/medium-v0" not in [r[1] for r in rows]  # a set without a short name is listed only when local
    assert [r[1] for r in rows].count("D4RL/door/human-v2") == 1


# ----------------------------------------------------------------------------------------- real data
def check_transitions(t, steps, episodes, obs_dim, act_dim):
    assert t.observations.shape == t.next_observations.shape == (steps, obs_dim)
    assert t.actions.shape == t.next_actions.shape == (steps, act_dim)
    assert t.rewards.shape == t.terminals.shape == t.timeouts.shape == (steps,)
    for name in ("observations", "actions", "rewards", "next_observations", "next_actions", "terminals", "timeouts"):
        assert getattr(t, name).dtype == np.float32, name
    assert t.episode_returns.shape == t.episode_lengths.shape == (episodes,)
    assert t.episode_returns.dtype == np.float64 and t.episode_lengths.dtype == np.int64
    assert t.episode_lengths.sum() == steps
    ends = np.cumsum(t.episode_lengths) - 1
    starts = ends - t.episode_lengths + 1
    inside = np.ones(steps, dtype=bool)
    inside[ends] = False
    np.testing.assert_array_equal(t.next_observations[inside], t.observations[1:][inside[:-1]])
    np.testing.assert_array_equal(t.next_actions[inside], t.actions[1:][inside[:-1]])
    np.testing.assert_array_equal(t.next_actions[ends], t.actions[ends])
    sums = np.add.reduceat(t.rewards.astype(np.float64), starts)
    np.testing.assert_allclose(t.episode_returns, sums, rtol=1e-5, atol=1e-3)
    # every episode ends in a termination or a truncation, and only there
    assert np.all(np.maximum(t.terminals, t.timeouts)[ends] == 1.0)
    assert t.terminals[inside].sum() == 0 and t.timeouts[inside].sum() == 0


@pytest.mark.real_data("D4RL/door/human-v2")
def test_real_door_human():
    dataset = load_dataset("door-human")
    t = load_transitions(dataset)
    check_transitions(t, 6729, 25, 39, 28)
    info = dataset_info(dataset)
    assert (info.dataset_id, info.env_id) == ("D4RL/door/human-v2", "AdroitHandDoor-v1")
    assert (info.total_steps, info.total_episodes, info.eval_horizon) == (6729, 25, 200)
    assert info.max_action == 1.0 and info.action_low == (-1.0,) * 28
    # the direct HDF5 read equals minari's own episode iterator
    episodes = list(dataset.iterate_episodes())
    np.testing.assert_allclose(t.observations, np.concatenate([e.observations[:-1] for e in episodes]), rtol=1e-6)
    np.testing.assert_allclose(t.episode_returns, [e.rewards.sum() for e in episodes], rtol=1e-12)


@pytest.mark.real_data("dapg/pen/medium-v0")
def test_real_pen_medium():
    dataset = load_dataset("dapg/pen/medium-v0")
    t = load_transitions(dataset)
    check_transitions(t, 20000, 200, 45, 24)
    info = dataset_info(dataset)
    assert (info.observation_dim, info.action_dim, info.eval_horizon) == (45, 24, 100)
    assert (info.ref_min_score, info.ref_max_score) == pytest.approx(PEN_REFS)
    assert info.env_id == "AdroitHandPen-v1" and info.max_action == 1.0
    # the minari fallback (iterate_episodes) assembles the same arrays
    obs_dim, act_dim = info.observation_dim, info.action_dim
    fallback = transitions._assemble(dataset.id, transitions._iterated_episodes(dataset), obs_dim, act_dim)
    for name in ("observations", "actions", "rewards", "next_observations", "next_actions", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(fallback, name), getattr(t, name), err_msg=name)


def test_normalized_score_uses_the_d4rl_references():
    info = dataset_info(load_dataset("dapg/pen/expert-v0"))  # the stand-in carries pen's D4RL references
    np.testing.assert_allclose(normalized_score(info, [PEN_REFS[0], PEN_REFS[1]]), [0.0, 100.0], atol=1e-9)
    assert normalized_score(info, np.full((2, 3), PEN_REFS[1])).shape == (2, 3)
    from dataclasses import replace

    with pytest.raises(DatasetError, match="reference"):
        normalized_score(replace(info, ref_max_score=None), [1.0])


# ----------------------------------------------------------------------------------------- unavailable
def test_offline_pen_human_fails_fast_and_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("METACONSTRAINT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METACONSTRAINT_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset("pen-human")
    assert time.perf_counter() - start < 3
    message = str(caught.value)
    for needle in ("D4RL/pen/human-v2", "MINARI_DATASETS_PATH", "METACONSTRAINT_OFFLINE", "minari download", "datasets list"):
        assert needle in message


def test_unreachable_remote_is_detected_by_the_probe(monkeypatch, tmp_path):
    import minari

    def no_download(*args, **kwargs):
        raise AssertionError("minari.download_dataset must not be called when the remote is unreachable")

    with __import__("socket").socket() as s:  # a local port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("METACONSTRAINT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("MINARI_REMOTE", raising=False)
    for proxy in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(minari, "download_dataset", no_download)
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError, match=f"127.0.0.1:{port}"):
        load_dataset("door-cloned")
    assert time.perf_counter() - start < 3


def test_download_false_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.delenv("METACONSTRAINT_OFFLINE", raising=False)
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        load_dataset("D4RL/hammer/expert-v2", download=False)


# ----------------------------------------------------------------------------------------- pen-human
def test_local_pen_human_loads_by_short_name(pen_human):
    dataset = load_dataset("pen-human")
    info = dataset_info(dataset)
    assert info.dataset_id == "D4RL/pen/human-v2" and info.eval_horizon == 100
    assert (info.ref_min_score, info.ref_max_score) == pytest.approx(PEN_REFS)
    check_transitions(load_transitions(dataset), 500, 5, 45, 24)
    assert ("pen-human", "D4RL/pen/human-v2", True) in known_datasets()


def test_eval_env_has_the_eval_horizon(pen_human):
    envs = make_eval_env(load_dataset("pen-human"), num_envs=2)
    try:
        assert envs.num_envs == 2
        envs.reset(seed=[0, 1])
        actions = np.zeros((2, 24), dtype=np.float32)
        for step in range(1, 101):
            _, _, terminated, truncated, _ = envs.step(actions)
            if np.any(terminated | truncated):
                break
        assert step == 100 and truncated.all()
    finally:
        envs.close()


def test_transitions_accept_a_name(pen_human):
    assert load_transitions("pen-human").observations.shape == (500, 45)


# ----------------------------------------------------------------------------------------- broken data
def test_truncated_hdf5_gives_a_clear_error(monkeypatch, tmp_path, pen_human_root):
    file = copy_pen_human(pen_human_root, tmp_path)
    size = file.stat().st_size
    with open(file, "r+b") as handle:
        handle.truncate(size // 2)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(DatasetError) as caught:
        load_dataset("pen-human")
    message = str(caught.value)
    assert str(file) in message and "truncated or corrupt" in message
    assert "Traceback" not in message and caught.value.__cause__ is None


def test_empty_or_missing_files_give_clear_errors(monkeypatch, tmp_path, pen_human_root):
    file = copy_pen_human(pen_human_root, tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    file.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty"):
        load_dataset("pen-human")
    file.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(DatasetError, match="cannot be read as HDF5"):
        load_dataset("pen-human")
    file.unlink()
    with pytest.raises(DatasetError, match="missing"):
        load_dataset("pen-human")
    (file.parent / "metadata.json").unlink()
    with pytest.raises(DatasetError, match="no metadata.json"):
        load_dataset("pen-human")


def test_a_dataset_in_the_wrong_folder_is_refused(monkeypatch, tmp_path, pen_human_root):
    shutil.copytree(pen_human_root / "D4RL" / "pen" / "human-v2", tmp_path / "D4RL" / "pen" / "cloned-v2")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(DatasetError, match="says it is D4RL/pen/human-v2"):
        load_dataset("pen-cloned")


def test_a_malformed_episode_is_named(monkeypatch, tmp_path, pen_human_root):
    import h5py

    file = copy_pen_human(pen_human_root, tmp_path)
    with h5py.File(file, "r+") as handle:  # drop the final observation of episode 3
        group = handle["episode_3"]
        observations = group["observations"][:-1]
        del group["observations"]
        group["observations"] = observations
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(DatasetError, match="episode_3 of the dataset file .* is malformed"):
        load_transitions(load_dataset("pen-human"))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dict_observations_are_flattened_and_non_box_entries_refused(monkeypatch, tmp_path):
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    act_space = gym.spaces.Box(-1, 1, (2,), dtype=np.float32)

    def write(dataset_id, obs_space, observations):
        episode = EpisodeBuffer(
            id=0,
            observations=observations,
            actions=np.zeros((3, 2), dtype=np.float32),
            rewards=np.zeros(3),
            terminations=np.array([False, False, True]),
            truncations=np.zeros(3, dtype=bool),
        )
        minari.create_dataset_from_buffers(dataset_id, [episode], observation_space=obs_space, action_space=act_space)
        return load_dataset(dataset_id, download=False)

    obs_space = gym.spaces.Dict({k: gym.spaces.Box(-9, 9, (n,)) for k, n in (("desired_goal", 2), ("observation", 3), ("achieved_goal", 2), ("extra", 1))})
    observations = {k: np.full((4, obs_space[k].shape[0]), v, dtype=np.float32) for k, v in (("observation", 1), ("achieved_goal", 2), ("desired_goal", 3), ("extra", 4))}
    observations["observation"][:, 0] = np.arange(4)
    t = load_transitions(write("test/dict/tiny-v0", obs_space, observations))
    # observation, achieved_goal, desired_goal, then the other keys sorted
    np.testing.assert_array_equal(t.observations[0], [0, 1, 1, 2, 2, 3, 3, 4])
    np.testing.assert_array_equal(t.next_observations[:, 0], [1, 2, 3])
    assert dataset_info(load_dataset("test/dict/tiny-v0")).observation_keys == ("observation", "achieved_goal", "desired_goal", "extra")

    bad_space = gym.spaces.Dict({"position": gym.spaces.Box(-1, 1, (2,)), "room": gym.spaces.Discrete(3)})
    bad = write("test/dict/discrete-v0", bad_space, {"position": np.zeros((4, 2), np.float32), "room": np.zeros(4, np.int64)})
    with pytest.raises(DatasetError, match="room: Discrete"):
        load_transitions(bad)
