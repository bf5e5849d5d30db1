"""PointMaze (D4RL's Maze2d) datasets remade here by the published recipe, with our own planner and controller.

The recipe (D4RL's maze2d sets, remade by Minari as ``D4RL/pointmaze/*``):

- Environment: gymnasium-robotics ``PointMaze_{UMaze,Medium,Large}-v3`` (``...Dense-v3`` for the
  dense reward) with ``continuing_task=True, reset_target=True``: on reaching the goal
  (``||achieved - desired|| <= 0.45``) the ball is not reset, a new goal is drawn. One trajectory of
  ``steps`` (1,000,000) environment steps; the first reset is seeded (123), never reset again.
- Episodes: the trajectory is split after every success step (that step is marked truncated), and
  the last episode is truncated at the end. No step is terminal. As in Minari's data, episode
  ``k + 1`` starts from episode ``k``'s last observation (which still holds the reached goal).
- Behaviour: a waypoint controller. A planner runs Q-iteration (50 sweeps, discount 0.99, reward 1
  for stepping into the goal cell, moves up/down/left/right between free cells) over the maze's
  cells and follows its greedy path. The controller steers at the next waypoint with a PD law

      a = 10 (w - x) - 1 v,        x = ball position, v = ball velocity, w = waypoint   (2,)

  switching waypoint within 0.1 of it; a waypoint is its cell's centre minus 0.2 U(0, 1) in each
  coordinate, the last one the goal itself. Gaussian noise of std 0.5 is added to every action, which is then clipped to the
  action bounds [-1, 1]. The controller replans whenever the goal changes.
- Rewards: sparse ``1[||achieved - desired|| <= 0.45]``, dense ``exp(-||achieved - desired||)``,
  evaluated after the step against the goal of that step. The reward does not change the dynamics,
  so the sparse and dense sets of a maze here share one trajectory.
- Evaluation (``eval_env_spec``): the same environment on the maze with one fixed goal cell
  (D4RL's evaluation goals: U-maze (1, 1), medium (6, 6), large (7, 9)), ``continuing_task=True,
  reset_target=False`` (the goal stays; the sparse return counts the steps spent at it), horizon
  300 / 600 / 800 steps as in D4RL's maze2d v1 and Minari.
- References: the mean return over 100 episodes of the uniform random policy (``ref_min_score``)
  and of the noise-free controller (``ref_max_score``) in the evaluation environment.

Everything is seeded, so a version (``-v0``) is reproducible with the same simulator versions.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Callable

import numpy as np

from metaconstraint.rl.envs import make_env

__all__ = [
    "MAZES",
    "POINTMAZE_DATASETS",
    "PointMazeRecipe",
    "WaypointController",
    "measure_references",
    "eval_env_spec",
    "generate_pointmaze",
    "next_cell_table",
    "pointmaze_controller",
    "simulate",
    "split_episodes",
]

FIRST_RESET_SEED = 123  # the recipe seeds the first (and only) reset
NOISE_STD = 0.5
SUCCESS_RADIUS = 0.45
DEFAULT_STEPS = 1_000_000
REFERENCE_EPISODES = 100
P_GAIN, D_GAIN = 10.0, -1.0
WAYPOINT_THRESHOLD = 0.1
WAYPOINT_OFFSET = 0.2
PLANNER_SWEEPS, PLANNER_DISCOUNT = 50, 0.99
MOVES = ((0, 1), (0, -1), (-1, 0), (1, 0))  # (row, column) steps, in the planner's tie-breaking order


@dataclasses.dataclass(frozen=True)
class Maze:
    """One maze: its gymnasium-robotics ids, D4RL's evaluation goal cell and evaluation horizon."""

    name: str  # gymnasium-robotics' name: PointMaze_<name>-v3
    eval_goal: tuple[int, int]  # (row, column)
    eval_horizon: int

    def env_id(self, reward_type: str) -> str:
        return f"PointMaze_{self.name}{'Dense' if reward_type == 'dense' else ''}-v3"


MAZES: dict[str, Maze] = {
    "umaze": Maze("UMaze", (1, 1), 300),
    "medium": Maze("Medium", (6, 6), 600),
    "large": Maze("Large", (7, 9), 800),
}
"""Maze key (as in the dataset ids) -> its facts."""


@dataclasses.dataclass(frozen=True)
class PointMazeRecipe:
    """How one built-in PointMaze dataset is made: the maze, the reward, the seed of the action noise."""

    maze: str
    reward_type: str  # "sparse" or "dense"
    noise_seed: int
    description: str
    published: str  # the Minari id of the set this one remakes


def _recipes() -> dict[str, PointMazeRecipe]:
    recipes = {}
    for key, maze in MAZES.items():
        for reward_type, suffix in (("sparse", ""), ("dense", "-dense")):
            published = f"D4RL/pointmaze/{key}{suffix}-v2"
            recipes[f"builtin/pointmaze/{key}{suffix}-v0"] = PointMazeRecipe(
                key, reward_type, 0,
                f"Local remake of {published} (D4RL maze2d-{key}{suffix}): 1M steps of "
                f"{maze.env_id(reward_type)} by a Q-iteration planner and a noisy waypoint controller.",
                published,
            )
    return recipes


POINTMAZE_DATASETS: dict[str, PointMazeRecipe] = _recipes()
"""Built-in PointMaze dataset id -> recipe."""


# ----------------------------------------------------------------------------------------- the maze grid
def _free(maze_map) -> np.ndarray:
    """``(rows, cols)`` bool: cells a ball can be in (every cell that is not a wall, ``1``)."""
    return np.array([[cell != 1 for cell in row] for row in maze_map], dtype=bool)


def next_cell_table(maze_map, goal_cell: tuple[int, int], sweeps: int = PLANNER_SWEEPS, discount: float = PLANNER_DISCOUNT) -> dict:
    """The planner: ``{cell: next cell}`` on the greedy path to ``goal_cell`` for every free cell.

    Q-iteration over the cells, ``sweeps`` times ``Q(s, a) = r(s, a) + discount * valid(s, a) * max_a' Q(s', a')``
    with ``s'`` the neighbour in direction ``a`` (:data:`MOVES`), ``r = 1`` if ``s'`` is the goal cell,
    ``valid`` 0 into a wall. The next cell is ``argmax_a Q`` (first of equals in :data:`MOVES` order).
    From the goal cell itself the table points at the goal cell.
    """
    free = np.pad(_free(maze_map), 1, constant_values=False)  # a wall ring: every neighbour is in bounds
    rows, cols = free.shape
    goal = (goal_cell[0] + 1, goal_cell[1] + 1)
    if not free[goal]:
        raise ValueError(f"the goal cell {goal_cell} is a wall")
    shifted = []
    for dr, dc in MOVES:  # index arrays of each cell's neighbour in direction a
        r_idx, c_idx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        shifted.append((np.clip(r_idx + dr, 0, rows - 1), np.clip(c_idx + dc, 0, cols - 1)))
    reward = np.stack([(nr == goal[0]) & (nc == goal[1]) for nr, nc in shifted], axis=-1).astype(np.float64)
    valid = np.stack([free[nr, nc] for nr, nc in shifted], axis=-1)
    q = np.zeros((rows, cols, len(MOVES)))
    for _ in range(sweeps):
        value = q.max(axis=-1)
        q = reward + discount * valid * np.stack([value[nr, nc] for nr, nc in shifted], axis=-1)
    best = q.argmax(axis=-1)
    table = {}
    for r in range(1, rows - 1):
        for c in range(1, cols - 1):
            if free[r, c]:
                dr, dc = MOVES[best[r, c]]
                table[(r - 1, c - 1)] = (r - 1 + dr, c - 1 + dc)
    table[goal_cell] = tuple(goal_cell)
    return table


class _Grid:
    """Cell <-> position conversions of a gymnasium-robotics maze (scaling 1: cells are 1 x 1)."""

    def __init__(self, maze_map, scaling: float = 1.0):
        self.map = maze_map
        self.rows, self.cols = len(maze_map), len(maze_map[0])
        self.scaling = scaling
        self.x_center = self.cols / 2 * scaling
        self.y_center = self.rows / 2 * scaling

    def cell(self, x: float, y: float) -> tuple[int, int]:
        return math.floor((self.y_center - y) / self.scaling), math.floor((x + self.x_center) / self.scaling)

    def centre(self, cell: tuple[int, int]) -> tuple[float, float]:
        return (cell[1] + 0.5) * self.scaling - self.x_center, self.y_center - (cell[0] + 0.5) * self.scaling


class WaypointController:
    """The recipe's behaviour without noise: follow the planner's path, PD control at each waypoint.

    ``act(x, y, vx, vy, goal_x, goal_y)`` returns the action ``(ax, ay)`` as floats (the per-step
    work is a few float operations: generation calls it a million times). ``rng`` draws the
    waypoint offsets. Paths are planned once per goal cell and cached.
    """

    def __init__(self, maze_map, rng: np.random.Generator):
        self.grid = _Grid(maze_map)
        self.rng = rng
        self._tables: dict[tuple[int, int], dict] = {}
        self._goal: tuple[float, float] | None = None
        self._goal_cell = self._target_cell = (0, 0)
        self._target = (0.0, 0.0)
        self._table: dict = {}

    def _plan(self, x: float, y: float, goal_x: float, goal_y: float) -> None:
        self._goal = (goal_x, goal_y)
        self._goal_cell = self.grid.cell(goal_x, goal_y)
        if self._goal_cell not in self._tables:
            self._tables[self._goal_cell] = next_cell_table(self.grid.map, self._goal_cell)
        self._table = self._tables[self._goal_cell]
        here = self.grid.cell(x, y)
        self._target_cell = self._table.get(here, self._goal_cell)
        self._target = self._goal if self._target_cell == self._goal_cell else self.grid.centre(self._target_cell)

    def act(self, x: float, y: float, vx: float, vy: float, goal_x: float, goal_y: float) -> tuple[float, float]:
        goal = self._goal
        if goal is None or abs(goal[0] - goal_x) > 1e-3 or abs(goal[1] - goal_y) > 1e-3:
            self._plan(x, y, goal_x, goal_y)
        tx, ty = self._target
        if self._target_cell != self._goal_cell and math.hypot(tx - x, ty - y) <= WAYPOINT_THRESHOLD:
            self._target_cell = self._table[self._target_cell]
            if self._target_cell == self._goal_cell:
                self._target = self._goal
            else:
                cx, cy = self.grid.centre(self._target_cell)
                ox, oy = self.rng.uniform(size=2)
                self._target = (cx - WAYPOINT_OFFSET * ox, cy - WAYPOINT_OFFSET * oy)
            tx, ty = self._target
        return P_GAIN * (tx - x) + D_GAIN * vx, P_GAIN * (ty - y) + D_GAIN * vy


def pointmaze_controller(maze: str, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """The noise-free controller of ``maze`` (``umaze``, ``medium``, ``large``) as a policy on flat
    observations ``[x, y, vx, vy, achieved_x, achieved_y, goal_x, goal_y]`` (8,) -> action (2,)."""
    controller = WaypointController(_maze_map(maze), np.random.default_rng(seed))

    def act(observation: np.ndarray) -> np.ndarray:
        o = [float(v) for v in observation[:8]]
        return np.clip(np.array(controller.act(o[4], o[5], o[2], o[3], o[6], o[7]), dtype=np.float32), -1.0, 1.0)

    return act


def _maze_map(maze: str) -> list:
    if maze not in MAZES:
        from metaconstraint.suggest import unknown_name

        raise ValueError(unknown_name("maze", maze, MAZES))
    from metaconstraint.rl.collect import make_env_spec

    return make_env_spec(MAZES[maze].env_id("sparse")).kwargs["maze_map"]


# ----------------------------------------------------------------------------------------- environments
def data_env_spec(maze: str, reward_type: str, steps: int = DEFAULT_STEPS):
    """The spec the data come from: continuing task, a new goal on each success, horizon ``steps``."""
    from metaconstraint.rl.collect import make_env_spec

    spec = make_env_spec(MAZES[maze].env_id(reward_type))
    kwargs = {**spec.kwargs, "continuing_task": True, "reset_target": True}
    return dataclasses.replace(spec, kwargs=kwargs, max_episode_steps=int(steps))


def eval_env_spec(maze: str, reward_type: str):
    """The evaluation spec: D4RL's fixed goal cell, the goal kept on success, D4RL's horizon."""
    from metaconstraint.rl.collect import make_env_spec

    spec = make_env_spec(MAZES[maze].env_id(reward_type))
    goal_row, goal_col = MAZES[maze].eval_goal
    maze_map = [["g" if (r, c) == (goal_row, goal_col) else cell for c, cell in enumerate(row)] for r, row in enumerate(spec.kwargs["maze_map"])]
    kwargs = {**spec.kwargs, "maze_map": maze_map, "continuing_task": True, "reset_target": False}
    return dataclasses.replace(spec, kwargs=kwargs, max_episode_steps=MAZES[maze].eval_horizon)


# ----------------------------------------------------------------------------------------- simulation
@dataclasses.dataclass
class Trajectory:
    """One continuing trajectory of ``T`` steps: ``observation`` ``(T+1, 4)``, ``achieved_goal`` and
    ``desired_goal`` ``(T+1, 2)`` float64 (row ``t + 1`` is what step ``t`` returned, its desired goal
    the one that step was scored against), ``actions`` ``(T, 2)`` float32, ``success`` ``(T,)`` bool."""

    observation: np.ndarray
    achieved_goal: np.ndarray
    desired_goal: np.ndarray
    actions: np.ndarray
    success: np.ndarray

    def rewards(self, reward_type: str) -> np.ndarray:
        """``(T,)`` float64: sparse ``1[d <= 0.45]`` or dense ``exp(-d)``, ``d`` the distance after each step."""
        distance = np.linalg.norm(self.achieved_goal[1:] - self.desired_goal[1:], axis=-1)
        return np.exp(-distance) if reward_type == "dense" else (distance <= SUCCESS_RADIUS).astype(np.float64)


def simulate(maze: str, steps: int, noise_seed: int = 0, progress: Callable[[int], None] | None = None) -> Trajectory:
    """Run the recipe's behaviour for ``steps`` steps in the continuing ``maze``; returns the trajectory.

    The environment is stepped through its unwrapped ``step`` (no wrappers: the continuing task has
    no horizon within the run), the noise is drawn up front from ``default_rng(noise_seed)``.
    ``progress(done_steps)`` is called every few thousand steps.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    env = make_env(data_env_spec(maze, "sparse", steps))
    try:
        first, _ = env.reset(seed=FIRST_RESET_SEED)
        core = env.unwrapped
        rng = np.random.default_rng(noise_seed)
        noise = NOISE_STD * rng.standard_normal((steps, 2))
        controller = WaypointController(core.maze.maze_map, rng)
        observation = np.empty((steps + 1, 4))
        achieved = np.empty((steps + 1, 2))
        desired = np.empty((steps + 1, 2))
        actions = np.empty((steps, 2), dtype=np.float32)
        success = np.zeros(steps, dtype=bool)
        observation[0], achieved[0], desired[0] = first["observation"], first["achieved_goal"], first["desired_goal"]
        x, y, vx, vy = (float(v) for v in first["observation"])
        gx, gy = (float(v) for v in first["desired_goal"])
        action = np.empty(2, dtype=np.float32)
        report = max(1, min(steps // 100, 10_000))
        for t in range(steps):
            ax, ay = controller.act(x, y, vx, vy, gx, gy)
            action[0] = min(1.0, max(-1.0, ax + noise[t, 0]))
            action[1] = min(1.0, max(-1.0, ay + noise[t, 1]))
            step, _, _, _, info = core.step(action)
            actions[t] = action
            state = step["observation"]
            observation[t + 1] = state
            achieved[t + 1] = step["achieved_goal"]
            desired[t + 1] = step["desired_goal"]
            success[t] = info["success"]
            x, y, vx, vy = float(state[0]), float(state[1]), float(state[2]), float(state[3])
            goal = core.goal  # the goal after the step: a new one after a success
            gx, gy = float(goal[0]), float(goal[1])
            if progress is not None and (t + 1) % report == 0:
                progress(t + 1)
        if progress is not None:
            progress(steps)
        return Trajectory(observation, achieved, desired, actions, success)
    finally:
        env.close()


def split_episodes(trajectory: Trajectory, reward_type: str) -> list:
    """Minari ``EpisodeBuffer`` s: the trajectory cut after every success step (and at its end).

    Episode ``k`` holds steps ``[s_k, e_k]``: observations rows ``s_k .. e_k + 1`` (so the next
    episode starts from this one's last observation), ``truncations`` true at its last step only,
    no terminations.
    """
    from minari.data_collector import EpisodeBuffer

    steps = len(trajectory.actions)
    ends = np.flatnonzero(trajectory.success)
    ends = np.append(ends, steps - 1) if not ends.size or ends[-1] != steps - 1 else ends
    starts = np.concatenate([[0], ends[:-1] + 1])
    rewards = trajectory.rewards(reward_type)
    buffers = []
    for e, (s, end) in enumerate(zip(starts, ends)):
        length = int(end - s + 1)
        truncations = np.zeros(length, dtype=bool)
        truncations[-1] = True
        observations = {
            "observation": trajectory.observation[s : end + 2],
            "achieved_goal": trajectory.achieved_goal[s : end + 2],
            "desired_goal": trajectory.desired_goal[s : end + 2],
        }
        buffers.append(
            EpisodeBuffer(
                id=e,
                observations=observations,
                actions=trajectory.actions[s : end + 1],
                rewards=rewards[s : end + 1],
                terminations=np.zeros(length, dtype=bool),
                truncations=truncations,
            )
        )
    return buffers


# ----------------------------------------------------------------------------------------- the datasets
@dataclasses.dataclass(frozen=True)
class References:
    """Mean returns in a maze's evaluation environment over ``episodes`` episodes, for both rewards:
    ``random[reward_type]`` (uniform random actions) and ``controller[reward_type]`` (the noise-free
    controller); ``success`` is the fraction of episodes in which the controller reached the goal."""

    episodes: int
    random: dict
    controller: dict
    success: float


def _rollout_returns(maze: str, episodes: int, act: Callable) -> tuple[np.ndarray, np.ndarray]:
    """Sparse and dense returns ``(episodes,)`` of ``act(x, y, vx, vy, goal_x, goal_y) -> (ax, ay)`` in the
    evaluation environment. Episode ``e`` resets with seed ``REFERENCE_SEED_OFFSET + e`` (as
    ``datasets collect`` measures references) and runs the full horizon (the task never terminates);
    one rollout gives both rewards, which do not change the dynamics."""
    from metaconstraint.rl.collect import REFERENCE_SEED_OFFSET

    spec = eval_env_spec(maze, "sparse")
    env = make_env(spec)
    sparse, dense = np.zeros(episodes), np.zeros(episodes)
    action = np.empty(2, dtype=np.float32)
    try:
        core = env.unwrapped
        for e in range(episodes):
            first, _ = env.reset(seed=REFERENCE_SEED_OFFSET + e)
            x, y, vx, vy = (float(v) for v in first["observation"])
            gx, gy = (float(v) for v in first["desired_goal"])
            positions = np.empty((spec.max_episode_steps, 2))
            for t in range(spec.max_episode_steps):
                ax, ay = act(x, y, vx, vy, gx, gy)
                action[0], action[1] = min(1.0, max(-1.0, ax)), min(1.0, max(-1.0, ay))
                state = core.step(action)[0]["observation"]
                x, y, vx, vy = float(state[0]), float(state[1]), float(state[2]), float(state[3])
                positions[t] = x, y
            distance = np.linalg.norm(positions - np.array([gx, gy]), axis=-1)  # the goal stays (reset_target=False)
            sparse[e], dense[e] = float(np.sum(distance <= SUCCESS_RADIUS)), float(np.sum(np.exp(-distance)))
    finally:
        env.close()
    return sparse, dense


def measure_references(maze: str, episodes: int = REFERENCE_EPISODES) -> References:
    """D4RL's way: the random policy's and the noise-free controller's mean returns in the evaluation
    environment with its horizon (random actions from ``default_rng(12345)``)."""
    rng = np.random.default_rng(12345)
    random_sparse, random_dense = _rollout_returns(maze, episodes, lambda *_: tuple(rng.uniform(-1.0, 1.0, size=2)))
    controller = WaypointController(_maze_map(maze), np.random.default_rng(0))
    sparse, dense = _rollout_returns(maze, episodes, controller.act)
    return References(
        episodes,
        {"sparse": float(random_sparse.mean()), "dense": float(random_dense.mean())},
        {"sparse": float(sparse.mean()), "dense": float(dense.mean())},
        float(np.mean(sparse > 0)),
    )


def _rich_progress(label: str, total: int, console=None):
    """A rich progress bar ``(context, update(done))`` on ``console`` (default: rich's global one)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn(f"[bold]generate[/] {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("generate", total=total)
    return progress, lambda done: progress.update(task, completed=done)


def generate_pointmaze(
    dataset_id: str,
    root: pathlib.Path,
    steps: int = DEFAULT_STEPS,
    reference_episodes: int = REFERENCE_EPISODES,
    show_progress: bool = True,
    console=None,
) -> pathlib.Path:
    """Simulate the maze of ``dataset_id`` and write it under ``root``; return its folder.

    The sparse and dense sets of a maze share the trajectory, so both are written (the other one
    only if it is not there yet). ``steps`` below the recipe's 1M makes a smaller set (for tests);
    its description says so. The progress bar goes to ``console`` (a ``rich.console.Console``).
    """
    from metaconstraint.rl.collect import write_dataset
    from metaconstraint.rl.data import find_local_dataset

    recipe = POINTMAZE_DATASETS[dataset_id]
    if show_progress:
        progress, update = _rich_progress(dataset_id, steps, console)
        with progress:
            trajectory = simulate(recipe.maze, steps, recipe.noise_seed, update)
    else:
        trajectory = simulate(recipe.maze, steps, recipe.noise_seed)
    root = pathlib.Path(root)
    requested, references = None, None
    for twin_id, twin in POINTMAZE_DATASETS.items():
        if twin.maze != recipe.maze or twin.noise_seed != recipe.noise_seed:
            continue
        if twin_id != dataset_id and (root.joinpath(*twin_id.split("/")) / "data").is_dir():
            continue
        references = references or measure_references(twin.maze, reference_episodes)
        ref_min, ref_max = references.random[twin.reward_type], references.controller[twin.reward_type]
        buffers = split_episodes(trajectory, twin.reward_type)
        eval_spec = eval_env_spec(twin.maze, twin.reward_type)
        size = "the recipe's 1M steps" if steps == DEFAULT_STEPS else f"{steps:,} steps (a smaller variant; the recipe has 1M)"
        description = (
            f"metaconstraint built-in dataset. {twin.description} This set: {size}, {len(buffers):,} episodes (split at "
            f"each success), {twin.reward_type} reward, first reset seed {FIRST_RESET_SEED}, noise seed {twin.noise_seed}. "
            f"Evaluation: {eval_spec.id} with the goal fixed in cell "
            f"{list(MAZES[twin.maze].eval_goal)}, horizon {eval_spec.max_episode_steps}. References over "
            f"{reference_episodes} episodes: random {ref_min:.6g}, noise-free controller {ref_max:.6g} "
            f"(it reached the goal in {100 * references.success:.0f}% of them)."
        )
        folder = write_dataset(
            twin_id, buffers, root, data_env_spec(twin.maze, twin.reward_type, DEFAULT_STEPS), ref_min, ref_max,
            "QIteration waypoint controller (metaconstraint)", description, eval_spec=eval_spec,
        )
        if twin_id == dataset_id:
            requested = folder
    return requested if requested is not None else find_local_dataset(dataset_id)
