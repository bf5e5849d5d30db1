"""Speed options of a run: ``--threads`` sets torch's thread count, is recorded, and is validated."""

import json
import tomllib

import pytest
import torch
from typer.testing import CliRunner

from metaconstraint.cli import app

runner = CliRunner()
TINY = ["--steps", "40", "--eval-every", "40", "--eval-episodes", "1"]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_flag_sets_torch_threads_and_is_recorded(tmp_path, restore_threads):
    torch.set_num_threads(2)
    result = runner.invoke(app, ["run", "td3bc", "--dataset", "D4RL/door/human-v2", *TINY, "--threads", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "td3bc" / "D4RL__door__human-v2" / "seed0"
    assert tomllib.loads((run_dir / "config.toml").read_text())["threads"] == 1
    assert json.loads((run_dir / "environment.json").read_text())["torch_threads"] == 1
    assert torch.get_num_threads() == 1


def test_threads_must_be_positive(tmp_path):
    result = runner.invoke(app, ["run", "td3bc", "--dataset", "D4RL/door/human-v2", "--threads", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "threads" in result.output and "Traceback" not in result.output


def test_compile_with_stacked_seeds_runs_eagerly_and_says_so(tmp_path):
    result = runner.invoke(
        app, ["run", "td3bc", "--dataset", "D4RL/door/human-v2", *TINY, "--seeds", "2", "--compile", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "runs eagerly" in result.output
    config = tomllib.loads((tmp_path / "td3bc" / "D4RL__door__human-v2" / "seed1" / "config.toml").read_text())
    assert config["compile"] is True


@pytest.mark.slow
@pytest.mark.parametrize("name", ["td3bc", "aspc"])
def test_compiled_critic_step_equals_the_eager_one(name):
    """The compiled critic step (one seed) trains the same networks as the eager one, to float32 rounding."""
    import numpy as np
    from types import SimpleNamespace

    from metaconstraint.algorithms import ALGORITHMS
    from metaconstraint.algorithms.base import ProblemSpec
    from metaconstraint.rl.buffer import MemberSampler, OfflineBuffer, StateNormalizer

    rng = np.random.default_rng(0)
    n = 1000
    data = SimpleNamespace(
        observations=rng.standard_normal((n, 11), dtype=np.float32),
        actions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        rewards=rng.standard_normal(n, dtype=np.float32),
        next_observations=rng.standard_normal((n, 11), dtype=np.float32),
        next_actions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        terminals=(rng.random(n) < 0.1).astype(np.float32),
    )
    buffer = OfflineBuffer(data, StateNormalizer.identity(11))
    states = []
    for compiled in (False, True):
        cls = ALGORITHMS[name]
        algorithm = cls(cls.Config(), ProblemSpec(11, 3, 1.0, 1000), 1, torch.device("cpu"))
        assert algorithm.compile() if compiled else True
        sampler = MemberSampler(buffer, 64, [0])
        state = algorithm.init_state([0])
        for iteration in range(1, 21):  # 10 actor steps and one alpha step
            state, _ = algorithm.update(state, sampler, iteration)
        states.append(state)
    eager, compiled = states
    for key in ("critic", "actor", "target_critic"):
        for name_, value in eager[key].items():
            torch.testing.assert_close(compiled[key][name_], value, rtol=1e-4, atol=1e-5, msg=f"{key} {name_}")
    assert not torch.equal(eager["actor"]["w0"], eager["target_actor"]["w0"])
