"""Try every kind of bad input through the CLI and print a Markdown table of what each produced.

    MINARI_DATASETS_PATH=../shared/datasets METACONSTRAINT_OFFLINE=1 python benchmarks/bad_inputs.py

Each case runs in-process through typer's test runner in a fresh temporary folder; the table has
the exit code, whether a traceback appeared, and the message's first sentence.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from typer.testing import CliRunner

from metaconstraint.cli import app

DOOR = "D4RL/door/human-v2"


def cases(tmp: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    shared = Path(os.environ.get("MINARI_DATASETS_PATH", "../shared/datasets"))
    files = {
        "syntax.toml": 'steps = 10\nalpha_lr = = 0.1\n',
        "syntax.yaml": "steps: 10\nalpha_lr: [0.1\n",
        "unknown.toml": "alpha_lrr = 0.01\n",
        "invalid.toml": "alpha_lr = -1.0\n",
        "wrongtype.toml": 'eval_episodes = "many"\n',
        "badrule.toml": 'final_score_rule = "best"\n',
        "guard.toml": "alpha_min = 5.0\nalpha_max = 1.0\n",
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    corrupt = tmp / "corrupt"
    shutil.copytree(shared / "D4RL" / "door", corrupt / "D4RL" / "door")
    data = corrupt / "D4RL" / "door" / "human-v2" / "data" / "main_data.hdf5"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    empty = tmp / "empty"
    (empty / "D4RL" / "door" / "human-v2").mkdir(parents=True)
    (tmp / "file").write_text("a file, not a folder")
    out = str(tmp / "out")
    run = ["run", "aspc", "--dataset", DOOR, "--steps", "10", "--out", out]
    return [
        ("unknown algorithm", ["run", "aspz", "--dataset", DOOR, "--out", out], {}),
        ("unknown short name", ["run", "aspc", "--dataset", "pen-humen", "--out", out], {}),
        ("unknown Minari id", ["run", "aspc", "--dataset", "D4RL/pen/humn-v2", "--out", out], {}),
        ("not local, offline", ["run", "aspc", "--dataset", "pen-human", "--out", out], {}),
        ("--steps 0", [*run[:4], "--steps", "0", "--out", out], {}),
        ("--seeds -1", [*run, "--seeds", "-1"], {}),
        ("unknown outer loss", [*run, "--outer-loss", "l9"], {}),
        ("outer loss import path that does not exist", [*run, "--outer-loss", "nomodule:loss"], {}),
        ("outer loss weight not a number", [*run, "--outer-loss", "l1=x"], {}),
        ("device that does not exist", [*run, "--device", "cuda:7"], {}),
        ("TOML syntax error", [*run, "--config", str(tmp / "syntax.toml")], {}),
        ("YAML syntax error", [*run, "--config", str(tmp / "syntax.yaml")], {}),
        ("config file that does not exist", [*run, "--config", str(tmp / "missing.toml")], {}),
        ("unknown config key", [*run, "--config", str(tmp / "unknown.toml")], {}),
        ("negative learning rate", [*run, "--config", str(tmp / "invalid.toml")], {}),
        ("wrong value type", [*run, "--config", str(tmp / "wrongtype.toml")], {}),
        ("unknown final-score rule", [*run, "--config", str(tmp / "badrule.toml")], {}),
        ("alpha_min above alpha_max", [*run, "--config", str(tmp / "guard.toml")], {}),
        ("truncated hdf5", run, {"MINARI_DATASETS_PATH": str(corrupt)}),
        ("dataset folder without data", run, {"MINARI_DATASETS_PATH": str(empty)}),
        ("--out below a regular file", [*run[:-1], str(tmp / "file" / "runs")], {}),
        ("resume a folder that is not a run", ["resume", str(tmp)], {}),
        ("evaluate a folder without checkpoints", ["evaluate", str(tmp)], {}),
        ("unknown command", ["trian", "aspc"], {}),
    ]


def first_sentence(output: str) -> str:
    text = " ".join(output.split())
    for marker in ("error: ", "Error: "):
        if marker in text:
            text = text[text.index(marker) + len(marker):]
    end = text.find(". ")
    return (text if end < 0 else text[: end + 1])[:150].replace("|", "\\|")


def main() -> None:
    runner = CliRunner()
    rows, tracebacks = [], 0
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for kind, args, env in cases(tmp):
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                result = runner.invoke(app, args)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            crashed = "Traceback" in result.output or (result.exception is not None and not isinstance(result.exception, SystemExit))
            tracebacks += crashed
            rows.append(f"| {kind} | {result.exit_code} | {'YES' if crashed else 'no'} | {first_sentence(result.output)} |")
    print(f"{len(rows)} bad inputs, {tracebacks} tracebacks\n")
    print("| input | exit | traceback | message (first sentence) |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
