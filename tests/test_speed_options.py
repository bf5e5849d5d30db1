"""Speed options of a run: ``--threads`` sets torch's thread count, is recorded, and is validated;
``--compile`` trains the same networks as the eager update, and its compile time stays out of
``updates_per_second``."""

import json
import time
import tomllib

import pytest
import torch
from unittest.mock import patch
from typer.testing import CliRunner

from metaconstraint.cli import app

runner = CliRunner()
TINY = ["--steps", "40", "--eval-every", "40", "--eval-episodes", "1"]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_option_sets_torch_threads_and_is_recorded(tmp_path, restore_threads):
    """No training needed: the trainer sets the thread count when it is built, and the run's records
    (resolved config, environment record) are what config.toml and environment.json hold."""
    from metaconstraint.config import build_configs
    from metaconstraint.runs import environment_record
    from metaconstraint.training import Trainer

    torch.set_num_threads(2)
    trainer = Trainer(*build_configs({"algorithm": "td3bc", "dataset": "dapg/pen/expert-v0", "threads": 1, "eval_episodes": 1, "out": tmp_path}))
    assert torch.get_num_threads() == 1
    assert trainer.resolved["threads"] == 1 and environment_record()["torch_threads"] == 1


def test_threads_must_be_positive(tmp_path):
    result = runner.invoke(app, ["run", "td3bc", "--dataset", "D4RL/door/human-v2", "--threads", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "threads" in result.output and "Traceback" not in result.output


def test_compile_of_an_algorithm_without_compiled_form_runs_eagerly_and_says_so(tmp_path):
    result = runner.invoke(app, ["run", "bc", "--dataset", "D4RL/door/human-v2", *TINY, "--compile", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "runs eagerly" in result.output
    config = tomllib.loads((tmp_path / "bc" / "D4RL__door__human-v2" / "seed0" / "config.toml").read_text())
    assert config["compile"] is True


def test_compile_is_on_by_default_for_long_runs_only():
    from metaconstraint.config import RunConfig
    from metaconstraint.training import COMPILE_FROM_STEPS, compile_wanted

    def run(**values):
        return RunConfig(algorithm="td3bc", dataset="D4RL/door/human-v2", **values)

    assert compile_wanted(run()) is True  # the default --steps, 1M
    assert compile_wanted(run(steps=COMPILE_FROM_STEPS - 1)) is False
    assert compile_wanted(run(steps=COMPILE_FROM_STEPS)) is True
    assert compile_wanted(run(steps=100, compile=True)) is True
    assert compile_wanted(run(compile=False)) is False


def test_no_compile_flag_is_recorded(tmp_path):
    result = runner.invoke(app, ["run", "td3bc", "--dataset", "D4RL/door/human-v2", "--no-compile", "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "compile = false" in result.output


def test_a_failed_compilation_warns_and_trains_eagerly(float64):
    """Where inductor cannot compile (no C++ compiler, say), the run goes on eagerly with a warning
    and trains exactly the networks the eager update trains."""

    def failing_compile(fn, **_):
        def call(*args):
            raise torch._dynamo.exc.BackendCompilerFailed(fn, RuntimeError("no C++ compiler"), None)

        return call

    with pytest.warns(UserWarning, match="no C.. compiler.*running eagerly"):
        eager, fallback = train_both("td3bc", 1, 4, failing_compile)
    assert_same_training(eager, fallback, rtol=0, atol=0)


def traced_eagerly(fn, **_):
    """``torch.compile`` stand-in: runs ``fn`` eagerly but takes the branches the compiler traces
    (``torch.func.grad`` for gradients, Adam out of place), in seconds instead of a compile."""

    def run(*args):
        with patch("torch.compiler.is_compiling", return_value=True):
            return fn(*args)

    return run


SMALL = {"a2pr": {"vae_hidden": 32}, "rebrac": {"batch_size": 64}}


def train_both(name: str, members: int, iterations: int, compile_fn) -> tuple[dict, dict]:
    """``iterations`` updates of ``name`` eagerly and through ``compile()`` (with ``compile_fn`` as
    ``torch.compile``) from the same initial state and the same data streams."""
    from member_checks import synthetic_buffer

    from metaconstraint.algorithms import ALGORITHMS
    from metaconstraint.algorithms.base import ProblemSpec
    from metaconstraint.rl.buffer import MemberSampler

    buffer = synthetic_buffer()
    states = []
    for compiled in (False, True):
        cls = ALGORITHMS[name]
        algorithm = cls(cls.Config(**SMALL.get(name, {})), ProblemSpec(11, 3, 1.0, 1000), members, torch.device("cpu"))
        if compiled:
            with patch("torch.compile", compile_fn):
                assert algorithm.compile()
        seeds = list(range(members))
        sampler = MemberSampler(buffer, algorithm.batch_size, seeds)
        state = algorithm.init_state(seeds)
        for iteration in range(1, iterations + 1):
            state, metrics = algorithm.update(state, sampler, iteration)
        assert all(torch.isfinite(v).all() for v in metrics.values())
        states.append(state)
    return states[0], states[1]


def assert_same_training(eager: dict, compiled: dict, rtol: float, atol: float) -> None:
    networks = [k for k, v in eager.items() if isinstance(v, dict) and k not in ("meta", "outer") and not k.endswith("_opt")]
    for key in networks:
        for name, value in eager[key].items():
            torch.testing.assert_close(compiled[key][name], value, rtol=rtol, atol=atol, msg=f"{key} {name}")
    for key in [k for k in eager if k.endswith("_opt")]:
        assert compiled[key]["count"] == eager[key]["count"], key
        for name, value in eager[key]["exp_avg_sq"].items():
            torch.testing.assert_close(compiled[key]["exp_avg_sq"][name], value, rtol=rtol, atol=atol, msg=f"{key} {name}")
    torch.testing.assert_close(compiled["meta"]["raw"], eager["meta"]["raw"], rtol=rtol, atol=atol)
    assert not torch.equal(eager["actor"]["w0"], eager["target_actor"]["w0"])  # the networks trained


@pytest.mark.parametrize(("name", "members"), [("td3bc", 1), ("aspc", 1), ("aspc", 2), ("a2pr", 1), ("rebrac", 1)])
def test_the_traced_update_equals_the_eager_one(float64, name, members):
    """What compile() hands the compiler (critic and actor phases, func.grad, Adam out of place, meta
    iterations left eager) trains the same networks as the eager update, in float64 to 1e-10: 20
    iterations, 10 actor steps, one of them ASPC's alpha step."""
    eager, traced = train_both(name, members, 20, traced_eagerly)
    assert_same_training(eager, traced, rtol=1e-10, atol=1e-12)
    if name == "aspc":  # the alpha step (eager inside the compiled update) happened and moved alpha
        assert traced["meta"]["updates"] == 1
        assert (torch.nn.functional.softplus(traced["meta"]["raw"]["alpha"]) - 2.5).abs().min() > 1e-6


@pytest.mark.slow
@pytest.mark.parametrize(("name", "members"), [("td3bc", 1), ("aspc", 1), ("aspc", 2), ("a2pr", 1)])
def test_the_compiled_update_equals_the_eager_one(float64, name, members):
    """The same with the real torch.compile (inductor): compiled = eager to float64 rounding over 40
    iterations (20 actor steps, two alpha steps), step counts symbolic after the first recompile."""
    eager, compiled = train_both(name, members, 40, torch.compile)
    assert_same_training(eager, compiled, rtol=1e-9, atol=1e-11)


def slow_compiler(seconds: float):
    """``torch.compile`` stand-in whose first call of each function "compiles" for ``seconds`` (inside
    torch.compile's own start/end callbacks, as Dynamo runs them) and then runs it eagerly."""
    from torch._dynamo.callback import CallbackTrigger, callback_handler

    def compile_fn(fn, **_):
        compiled = []

        def call(*args):
            if not compiled:
                with callback_handler.install_callbacks(CallbackTrigger.DYNAMO, "0/0"):
                    time.sleep(seconds)
                compiled.append(True)
            return fn(*args)

        return call

    return compile_fn


def test_updates_per_second_leaves_compile_time_out_and_reports_it(pen_human_root, monkeypatch, tmp_path):
    """summary.json: ``compile_seconds`` holds the compiling (here 2 x 1.5 s, the critic and actor
    graphs), ``train_seconds`` and ``updates_per_second`` only the training iterations."""
    from metaconstraint import Experiment

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pen_human_root))
    monkeypatch.setenv("METACONSTRAINT_OFFLINE", "1")
    with patch("torch.compile", slow_compiler(1.5)):
        experiment = Experiment("td3bc", "D4RL/pen/human-v2", steps=20, eval_every=20, eval_episodes=1, compile=True, out=tmp_path)
        summary = experiment.fit()[0]
    assert summary == json.loads((experiment.directories[0] / "summary.json").read_text())
    assert 3.0 <= summary["compile_seconds"] < 3.0 + 1.0
    assert summary["train_seconds"] + summary["compile_seconds"] <= summary["wall_seconds"]
    assert summary["updates_per_second"] == pytest.approx(20 / summary["train_seconds"])
    assert summary["train_seconds"] < 20 / 2  # at least 2 it/s on a loaded machine: the 3 s are not in it


@pytest.mark.slow
@pytest.mark.parametrize("members", [1, 2])
def test_the_whole_compiled_aspc_iteration_equals_the_eager_one(float64, members):
    """With real torch.compile, ASPC's meta-iterations are one graph too (nested torch.func.grad, the
    meta-update and the target updates), with no graph break anywhere in the update: 100 iterations,
    5 alpha steps, equal to the eager update (autograd's create_graph) to float64 rounding."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager, compiled = train_both("aspc", members, 100, torch.compile)
    assert_same_training(eager, compiled, rtol=1e-9, atol=1e-11)
    assert compiled["meta"]["updates"] == 5
    assert not counters["graph_break"], dict(counters["graph_break"])
