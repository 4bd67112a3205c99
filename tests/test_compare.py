"""`r1pipe compare` and `report --sweep` on fabricated run directories whose numbers the tests set."""

import json
import math
import os

import pytest
from rich.console import Console
from test_cli import _probe

from r1pipe import compare, sweep, sweep_report
from r1pipe.errors import R1Error

PNG = b"\x89PNG\r\n\x1a\n"
SETTINGS = {"verifier": "integer", "k": 2}


def samples(greedy_ok: list[int], prompts: str = "abcd", sampled_ok: list[list[int]] | None = None) -> list[dict]:
    """Eval samples whose correctness is set: 1 answers the right number, 0 a wrong one."""
    def text(ok):
        return "<think>t</think><answer>" + ("7" if ok else "8") + "</answer>"

    sampled_ok = sampled_ok or [[ok, ok] for ok in greedy_ok]
    return [{"prompt": f"q{p}", "answer": "7", "greedy": text(g), "samples": [text(s) for s in ss]}
            for p, g, ss in zip(prompts, greedy_ok, sampled_ok)]


def stage(run_dir, name, fingerprint, config=None, duration=10.0, rows=None, store=None):
    """A finished stage: its manifest (eval from `rows`, scored as evaluation.summarize would) and samples.
    With `store`, the stage lives in `<store>/<name>/<fingerprint>` and the run links to it."""
    where = run_dir / name
    if store is not None:
        where = store / name / fingerprint
        run_dir.mkdir(parents=True, exist_ok=True)
        os.symlink(where, run_dir / name)
    if where.is_dir():  # an entry an earlier run wrote: only the link is new
        return
    where.mkdir(parents=True)
    manifest = {"stage": name, "fingerprint": fingerprint, "config": config or {}, "duration_s": duration,
                "outputs": {}, "hashes": {}, "metrics": {}}
    if rows is not None:
        acc = [r["greedy"].endswith(">7</answer>") for r in rows]
        mean = sum(acc) / len(acc)
        se = math.sqrt(sum((a - mean) ** 2 for a in acc) / (len(acc) - 1) / len(acc))
        manifest["eval"] = {"benchmark": "heldout", "n_problems": len(rows), "greedy_accuracy": mean,
                            "greedy_accuracy_se": se, "settings": SETTINGS}
        (where / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (where / "manifest.json").write_text(json.dumps(manifest))


def run_yaml(run_dir, config):
    import yaml

    (run_dir / "run.yaml").write_text(yaml.safe_dump({"overrides": [], "config": config}))


@pytest.fixture
def two_runs(tmp_path):
    """A and B share base (one store entry); cold_sft differs in its learning rate and its answers."""
    store = tmp_path / "store"
    a, b = tmp_path / "a", tmp_path / "b"
    for run, lr, ok in ((a, 1e-4, [1, 0, 0, 1]), (b, 3e-4, [1, 1, 1, 1])):
        stage(run, "base", "f" * 64, {"seed": 1}, duration=30.0, store=store)
        stage(run, "cold_sft", f"{lr}".ljust(64, "0"), {"trainer": {"learning_rate": lr}}, duration=20.0,
              rows=samples(ok), store=store)
        run_yaml(run, {"seed": 1, "run": {"dir": str(run)}, "cold_sft": {"trainer": {"learning_rate": lr, "seed": 0}}})
    return a, b


def test_config_diff_names_only_the_keys_that_differ(two_runs):
    c = compare.compare(list(two_runs))
    assert c.config == {"cold_sft.trainer.learning_rate": [1e-4, 3e-4]}  # run.dir always differs: left out


def test_config_diff_falls_back_to_manifests_without_run_yaml(two_runs):
    (two_runs[1] / "run.yaml").unlink()  # one run without it: both are read from their manifests
    assert compare.compare(list(two_runs)).config == {"cold_sft.trainer.learning_rate": [1e-4, 3e-4]}


def test_flatten_and_absent_keys():
    assert compare.flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
    diff = compare.config_diff([{"x": 1, "y": None}, {"x": 1}])
    assert diff == {"y": [None, compare.ABSENT]} and repr(diff["y"][1]) == "—"


def test_shared_stages_are_not_retrained(two_runs, tmp_path):
    # C trained base to the same fingerprint in a store of its own: shared work, but done again
    c_dir = tmp_path / "c"
    stage(c_dir, "base", "f" * 64, {"seed": 1}, duration=31.0)
    c = compare.compare([*two_runs, c_dir])
    a, b, cc = c.stages["base"]
    assert (a.shared, a.retrained, b.shared, b.retrained, cc.shared, cc.retrained) == (True, True, True, False, True, True)
    assert [x.shared if x else None for x in c.stages["cold_sft"]] == [True, False, None]
    assert compare.stage_text(b, first=False) == "ffffffff shared, not retrained"
    assert compare.stage_text(c.stages["cold_sft"][1], first=False).endswith("own, 20 s")
    assert [compare.trained_s(c.stages, i) for i in range(3)] == [50.0, 20.0, 31.0]


def test_paired_difference_on_the_same_problems(two_runs):
    c = compare.compare(list(two_runs))
    first, second = c.evals["cold_sft"]
    assert first.eval["greedy_accuracy"] == 0.5 and first.diff == {} and first.note == ""
    # per problem 1-1, 1-0, 1-0, 1-1: mean 0.5, sd sqrt(1/3), se sqrt(1/3)/2
    assert second.diff["greedy_accuracy_diff"] == pytest.approx(0.5)
    assert second.diff["greedy_accuracy_diff_se"] == pytest.approx(math.sqrt(1 / 3) / 2)
    assert second.diff["pass@1_diff"] == pytest.approx(0.5) and second.note == ""


def test_different_problems_give_no_number(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    stage(a, "cold_sft", "1" * 64, rows=samples([1, 0, 1, 0], prompts="abcd"))
    stage(b, "cold_sft", "2" * 64, rows=samples([1, 1, 1, 1], prompts="abce"))
    cell = compare.compare([a, b]).evals["cold_sft"][1]
    assert cell.diff == {} and cell.note == "different problems: no paired difference"
    (b / "cold_sft" / "eval_samples.jsonl").unlink()
    assert compare.compare([a, b]).evals["cold_sft"][1].note == "no eval samples to pair"


def test_render_prints_the_three_tables(two_runs):
    run_yaml(two_runs[1], {"cold_sft": {"trainer": {"learning_rate": 3e-4}}, "task": {"split": "[train]"}})
    console = Console(record=True, width=250)
    compare.render(compare.compare(list(two_runs)), console)
    text = console.export_text()
    assert "[train]" in text  # printed as text, not read as rich markup
    assert "cold_sft.trainer.learning_rate" in text and "0.0001" in text and "0.0003" in text
    assert "ffffffff shared, not retrained" in text and "own, 20 s" in text
    assert "50.0% ± 28.9" in text and "100.0% ± 0.0" in text and "+50.0 ± 28.9" in text


def test_a_sweep_directory_stands_for_its_members(tmp_path):
    sw = tmp_path / "x-sweep"
    for i, ok in enumerate(([1, 0, 1, 1], [0, 0, 1, 1])):
        stage(sw / str(i), "base", "b" * 64, store=sw / "store")
        stage(sw / str(i), "cold_sft", str(i) * 64, rows=samples(ok), store=sw / "store")
    sweep.write(sweep.Sweep(sw, [sweep.Member(str(i), [f"seed={i}"], [f"seed={i}"]) for i in range(2)]))
    c = compare.compare([sw])
    assert [r.label for r in c.runs] == ["x-sweep/0", "x-sweep/1"] and c.runs[1].swept == "seed=1"
    assert c.evals["cold_sft"][1].diff["greedy_accuracy_diff"] == pytest.approx(-0.25)
    assert c.stages["base"][1].retrained is False

    path = sweep_report.build(sw)
    assert path == sw / "report" / "sweep.md" and (sw / "report" / "accuracy.png").read_bytes().startswith(PNG)
    md = path.read_text()
    assert "| 0 | seed=0 | 75.0% ± 25.0 |" in md and "| 1 | seed=1 | 50.0% ± 28.9 |" in md
    assert "](accuracy.png)" in md


def test_missing_runs_are_one_line_errors(tmp_path, two_runs):
    with pytest.raises(R1Error, match="no run directory"):
        compare.compare([two_runs[0], tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(R1Error, match="holds no finished stage"):
        compare.compare([two_runs[0], tmp_path / "empty"])
    with pytest.raises(R1Error, match="1 run to compare"):
        compare.compare([two_runs[0]])
    with pytest.raises(R1Error, match="no sweep in"):
        sweep_report.build(tmp_path / "empty")


def test_compare_cli_reads_files_only(two_runs, tmp_path):
    stdout, stderr = _probe("compare", *map(str, two_runs))
    assert "HEAVY= CODE=0" in stdout, stdout + stderr  # no torch, transformers or trl
    stdout, stderr = _probe("compare", str(two_runs[0]), str(tmp_path / "nowhere"))
    assert "CODE=1" in stdout and len(stderr.strip().splitlines()) == 1 and "no run directory" in stderr
