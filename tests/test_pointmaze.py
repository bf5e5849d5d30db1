"""Built-in PointMaze (Maze2d) datasets remade by the D4RL/Minari recipe: the planner, the controller,
the structure of a small generated set, and a short train + evaluate on it. Everything is generated
here into temporary roots, with a few thousand steps instead of the recipe's million."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from metaconstraint.cli import app
from metaconstraint.rl import data
from metaconstraint.rl.builtin import BUILTIN_DATASETS, generate_builtin
from metaconstraint.rl.collect import make_env_spec
from metaconstraint.rl.envs import make_env
from metaconstraint.rl.observations import flatten_observations
from metaconstraint.rl.pointmaze import MAZES, eval_env_spec, measure_references, next_cell_table, pointmaze_controller, simulate

runner = CliRunner()
SMALL = 2500  # steps of the small sets the tests generate


def _small_umaze(home) -> None:
    generate_builtin("builtin/pointmaze/umaze-v0", home / "datasets", steps=SMALL, reference_episodes=3)


def _shortest_distances(maze_map, goal) -> dict:
    free = {(r, c) for r, row in enumerate(maze_map) for c, cell in enumerate(row) if cell != 1}
    distance, queue = {goal: 0}, collections.deque([goal])
    while queue:
        r, c = queue.popleft()
        for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if nxt in free and nxt not in distance:
                distance[nxt] = distance[(r, c)] + 1
                queue.append(nxt)
    return distance


@pytest.mark.parametrize("maze", list(MAZES))
def test_planner_follows_a_shortest_path_to_every_goal(maze):
    maze_map = make_env_spec(MAZES[maze].env_id("sparse")).kwargs["maze_map"]
    free = [(r, c) for r, row in enumerate(maze_map) for c, cell in enumerate(row) if cell != 1]
    for goal in free:
        table = next_cell_table(maze_map, goal)
        distance = _shortest_distances(maze_map, goal)
        for start in free:
            cell, moves = start, 0
            while cell != goal:
                nxt = table[cell]
                assert abs(nxt[0] - cell[0]) + abs(nxt[1] - cell[1]) == 1 and nxt in distance  # a move into a free cell
                cell, moves = nxt, moves + 1
                assert moves <= len(free)
            assert moves == distance[start]


@pytest.mark.parametrize("maze", list(MAZES))
def test_noise_free_controller_reaches_random_goals(maze):
    """Episodic task (the episode ends at the goal), random goals and starts, the evaluation horizon."""
    spec = make_env_spec(MAZES[maze].env_id("sparse"), MAZES[maze].eval_horizon)
    env = make_env(spec, continuing_task=False)
    reached = []
    for episode in range(8):
        policy = pointmaze_controller(maze, seed=episode)
        observation, _ = env.reset(seed=episode)
        terminated = truncated = False
        while not (terminated or truncated):
            observation, _, terminated, truncated, _ = env.step(policy(flatten_observations(observation, env.observation_space)))
        reached.append(terminated)
    env.close()
    assert all(reached), f"the controller missed {reached.count(False)} of {len(reached)} goals in {maze}"


def test_references_are_the_evaluation_returns_of_random_and_controller():
    """The references equal what the project's generic measurement (the wrapped, flattened evaluation
    environment, as `datasets collect` and evaluation see it) gives for the same seeds."""
    from metaconstraint.rl.collect import measure_return, random_policy

    spec = eval_env_spec("medium", "sparse")
    assert spec.max_episode_steps == 600 and spec.kwargs["reset_target"] is False and spec.kwargs["continuing_task"]
    assert spec.kwargs["maze_map"][6][6] == "g"
    references = measure_references("medium", 3)
    controller = measure_return(spec, pointmaze_controller("medium"), 3, 0)
    randoms = measure_return(spec, random_policy(make_env(spec).action_space, 12345), 3, 0)
    assert references.controller["sparse"] == pytest.approx(controller.mean())
    assert references.random["sparse"] == pytest.approx(randoms.mean())
    dense = measure_return(eval_env_spec("medium", "dense"), pointmaze_controller("medium"), 3, 0)
    assert references.controller["dense"] == pytest.approx(dense.mean(), rel=1e-6)
    assert references.success == 1.0 and (controller > 100).all() and controller.mean() > randoms.mean() + 200


def test_small_set_has_the_recipes_structure(offline):
    _small_umaze(offline / "home")
    sparse_set, dense_set = data.load_dataset("builtin/pointmaze/umaze-v0"), data.load_dataset("builtin/pointmaze/umaze-dense-v0")
    info = data.dataset_info(sparse_set)
    assert info.observation_keys == ("observation", "achieved_goal", "desired_goal") and info.observation_dim == 8
    assert (info.env_id, info.eval_horizon, info.total_steps) == ("PointMaze_UMaze-v3", 300, SMALL)
    assert data.dataset_info(dense_set).env_id == "PointMaze_UMazeDense-v3"
    assert info.ref_max_score > info.ref_min_score + 100
    sparse, dense = data.load_transitions(sparse_set), data.load_transitions(dense_set)
    np.testing.assert_array_equal(sparse.observations, dense.observations)  # one trajectory, two rewards
    np.testing.assert_array_equal(sparse.actions, dense.actions)
    assert not sparse.terminals.any() and np.abs(sparse.actions).max() <= 1.0

    # flat layout [x, y, vx, vy, achieved(2), desired(2)]: achieved is the position
    obs, nxt = sparse.observations, sparse.next_observations
    np.testing.assert_array_equal(obs[:, 0:2], obs[:, 4:6])
    distance = np.linalg.norm(nxt[:, 4:6].astype(np.float64) - nxt[:, 6:8], axis=-1)
    np.testing.assert_allclose(sparse.rewards, (distance <= 0.45).astype(np.float32))
    np.testing.assert_allclose(dense.rewards, np.exp(-distance), rtol=1e-5)

    # episodes end exactly at the successes: one sparse reward, at the last step of each (but the last)
    ends = np.cumsum(sparse.episode_lengths) - 1
    np.testing.assert_array_equal(np.flatnonzero(sparse.timeouts), ends)
    assert len(ends) > 10
    np.testing.assert_array_equal(sparse.rewards[ends[:-1]], 1.0)
    assert sparse.rewards.sum() == len(ends) - 1 + sparse.rewards[ends[-1]]
    # the trajectory is continuing: each episode starts where the previous one ended
    np.testing.assert_array_equal(obs[ends[:-1] + 1], nxt[ends[:-1]])
    # within an episode the goal is fixed after its first step (the first observation still shows the
    # reached goal, as in Minari's data); it changes between episodes
    starts = ends[:-1] + 1
    for s, e in zip(starts[:5], ends[1:6]):
        assert np.ptp(obs[s + 1 : e + 1, 6:8], axis=0).max() == 0.0
    assert np.linalg.norm(obs[starts[:5] + 1, 6:8] - obs[starts[:5] - 1, 6:8], axis=-1).min() > 0.45


def test_generation_is_deterministic_and_matches_the_simulator():
    first, second = simulate("umaze", 400), simulate("umaze", 400)
    for name in ("observation", "desired_goal", "actions", "success"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    # the stored rewards are the environment's own reward functions
    env = make_env(make_env_spec("PointMaze_UMazeDense-v3"))
    np.testing.assert_allclose(first.rewards("dense"), env.unwrapped.compute_reward(first.achieved_goal[1:], first.desired_goal[1:], {}))
    env.close()
    assert simulate("umaze", 400, noise_seed=1).actions.tolist() != first.actions.tolist()


def test_short_names_stay_minaris_and_the_list_shows_the_remakes(offline):
    for name, expected in (("maze2d-umaze", "D4RL/pointmaze/umaze-v2"), ("pointmaze-large-dense", "D4RL/pointmaze/large-dense-v2")):
        assert data.resolve_dataset_id(name) == expected
    assert data.resolve_dataset_id("builtin/pointmaze/medium-dense-v0") == "builtin/pointmaze/medium-dense-v0"
    result = runner.invoke(app, ["datasets", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for dataset_id in BUILTIN_DATASETS:
        assert dataset_id in result.output
    assert "maze2d-umaze" in result.output and "local remake" in result.output


def test_td3bc_trains_and_evaluates_on_a_small_generated_set(offline):
    _small_umaze(offline / "home")
    out = offline / "runs"
    args = ["run", "td3bc", "--dataset", "builtin/pointmaze/umaze-v0", "--steps", "200", "--eval-every", "100",
            "--eval-episodes", "2", "--out", str(out)]
    result = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "local remake of D4RL/pointmaze/umaze-v2" in result.output
    summary = json.loads((out / "td3bc" / "builtin__pointmaze__umaze-v0" / "seed0" / "summary.json").read_text())
    assert [s["step"] for s in summary["scores"]] == [100, 200] and np.isfinite(summary["final_score"])
    info = data.dataset_info("builtin/pointmaze/umaze-v0")
    assert summary["dataset"] == "builtin/pointmaze/umaze-v0" and info.total_steps == SMALL  # not regenerated at 1M


def test_evaluation_environments_leave_no_model_file_behind(offline):
    _small_umaze(offline / "home")
    envs = data.make_eval_env(data.load_dataset("builtin/pointmaze/umaze-v0"), num_envs=2)
    try:
        model_files = [env.unwrapped.tmp_xml_file_path for env in envs.envs]
        assert len(set(model_files)) == 2  # gymnasium-robotics writes one per environment
        assert not any(Path(f).exists() for f in model_files)
        envs.reset(seed=0)
        envs.step(envs.action_space.sample())  # the loaded model does not need its file
    finally:
        envs.close()
