"""The README's worked example, as a newcomer follows it: its task file, copied as printed, with data in the schema
its example rows show, passes the dry run it gives and trains a stage; its commands parse. If the README changes
so that the example no longer works, this fails."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _block_after(marker: str, lang: str = "") -> str:
    after = README[README.index(marker):]
    return after.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def _example_rows(start: int, n: int) -> list[dict]:
    """Rows in the README's schema (question, reasoning, answer), worded unlike the held-out ones."""
    items = ["apples", "pencils", "marbles", "stamps", "coins", "cards", "shells", "beads"]
    return [{"question": f"Crate {i} holds {a} boxes of {b} {item} each; how many {item} does crate {i} hold?",
             "reasoning": f"{a}*{b}={a * b}", "answer": str(a * b)}
            for i in range(start, start + n) for a, b, item in [(3 + i % 7, 11 + i % 13, items[i % len(items)])]]


def _cli(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r1pipe.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, timeout=600)


def test_the_readme_example_task_file_checks_and_trains(tmp_path):
    task = _block_after("Save this as `my_conf/task/mytask.yaml`", "yaml")
    (tmp_path / "my_conf" / "task").mkdir(parents=True)
    (tmp_path / "my_conf" / "task" / "mytask.yaml").write_text(task)
    shown = [json.loads(line) for line in _block_after("Put the data in").strip().splitlines()]
    assert all(set(row) == {"question", "reasoning", "answer"} for row in shown)  # the schema the rows show
    (tmp_path / "my_data").mkdir()
    write = lambda name, rows: (tmp_path / "my_data" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    write("train.jsonl", shown + _example_rows(0, 62))
    write("test.jsonl", [{"question": f"Multiply {a} by {b}.", "answer": str(a * b)} for a, b in zip(range(20, 36),
                                                                                                  range(40, 56))])

    commands = _block_after("Check the task, then train:").strip().replace("\\\n", " ").splitlines()
    assert commands[0] == "export R1PIPE_CONFIG_PATH=my_conf"
    env = {"R1PIPE_CONFIG_PATH": "my_conf", "HF_HUB_OFFLINE": "1"}
    dry = shlex.split(commands[1].split("#")[0])
    assert dry[:2] == ["r1pipe", "run-all"] and "--dry-run" in dry
    assert "run.dir=runs/mytask" in dry  # its own run directory, not the tour's runs/tiny
    r = _cli(dry[1:], tmp_path, env)
    assert r.returncode == 0 and "everything checked: ok" in " ".join(r.stdout.split()), r.stdout + r.stderr
    assert not (tmp_path / "runs").exists()

    # the README's training command at smoke size: the task file really trains cold_sft on these rows
    train = shlex.split(commands[2].split("#")[0])
    args = [("conf=smoke" if a == "conf=tiny" else a) for a in train[1:]] + ["eval.after_stage=false"]
    r = _cli(args, tmp_path, env)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / "runs" / "mytask" / "cold_sft" / "manifest.json").read_text())
    assert manifest["stage"] == "cold_sft" and manifest["metrics"]["global_step"] == 5
    checked = manifest["decontamination"]["sources"]["data"]
    assert (checked["checked"], checked["removed"]) == (64, 0)  # no training row overlaps a held-out one


def test_every_r1pipe_command_in_the_readme_names_a_real_command():
    from r1pipe.cli import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    code = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", README, re.M | re.S))
    used = set(re.findall(r"^(?:R1PIPE_CONFIG_PATH=\S+ )?r1pipe ([a-z-]+)", code, re.M))
    assert used and used <= names | {"-h"}, used - names
