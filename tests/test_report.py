"""`r1pipe report`: a self-contained HTML page and a markdown twin, with real plots drawn from the run's files."""

import base64
import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import overrides_for, remove_stage
from test_cli import _probe

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_has_every_stage_its_accuracy_and_the_plots(run_copy):
    stdout, stderr = _probe("report", *overrides_for(run_copy))
    assert "HEAVY= CODE=0" in stdout, stdout + stderr  # matplotlib only: no torch, transformers or trl
    out = run_copy / "report"
    html = (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    for stage in ("base", "cold_sft", "reasoning_rl", "rejection_sampling", "second_sft", "reward_model",
                  "alignment_rl", "distill"):
        assert f"<td>{stage}</td>" in html and f"| {stage} |" in md
    ev = json.loads((run_copy / "cold_sft" / "eval.json").read_text())
    assert f"{100 * ev['greedy_accuracy']:.1f}%" in html  # the numbers are the stage's own
    plots = ("lineage.png", "accuracy.png", "loss.png", "grpo_reasoning_rl.png", "grpo_alignment_rl.png")
    for name in plots:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
        assert f"]({name})" in md
    # each GRPO stage's figure draws the reward, the accuracy and format rewards and the completion length,
    # and its caption (in both pages) names each series drawn by its metrics.jsonl key
    for stage in ("reasoning_rl", "alignment_rl"):
        caption = md.split(f"](grpo_{stage}.png)", 1)[1].split("\n\n")[1].strip()
        for key in ("reward", "rewards/accuracy/mean", "rewards/format/mean", "completions/mean_length", "kl",
                    "rewards/language_consistency/mean"):
            assert f"`{key}`" in caption, (stage, key)
        assert "not logged" not in caption and caption.replace("`", "") in html.replace("`", "")
    assert "`rewards/helpfulness/mean`" in md.split("](grpo_alignment_rl.png)", 1)[1]
    # self-contained: every image is embedded, nothing is fetched
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(plots) and all(base64.b64decode(e).startswith(PNG) for e in embedded)
    assert "http://" not in html and "https://" not in html


def test_grpo_curves_say_what_was_not_logged(tmp_path):
    from r1pipe import plots, report

    log = [{"step": i, "reward": 0.5 * i, "rewards/accuracy/mean": 0.25 * i, "completions/mean_length": 10.0 + i}
           for i in (1, 2, 3)]  # no format reward, no KL (beta = 0), no other reward function
    rows = [report.StageRow("reasoning_rl", "complete", "", ["cold_sft"], metrics_log=log),
            report.StageRow("cold_sft", "complete", "", ["base"], metrics_log=[{"step": 1, "loss": 2.0}])]
    [(name, title, caption)] = plots.plot_grpo(rows, tmp_path)
    assert name == "grpo_reasoning_rl.png" and (tmp_path / name).read_bytes().startswith(PNG)
    assert "accuracy reward: `rewards/accuracy/mean`" in caption and "`completions/mean_length`" in caption
    assert "format reward (strict-format rate): not logged" in caption and "KL to the reference: not logged" in caption


def test_report_of_a_partial_run_shows_what_is_missing(run_copy):
    remove_stage(run_copy, "distill")
    (run_copy / "second_sft" / "manifest.json").unlink()
    stdout, stderr = _probe("report", *overrides_for(run_copy))
    assert "CODE=0" in stdout, stderr
    html = (run_copy / "report" / "index.html").read_text()
    assert '<td class="missing">missing</td>' in html


def test_report_without_a_run_is_a_one_line_error(tmp_path):
    stdout, stderr = _probe("report", *overrides_for(tmp_path / "nothing"))
    assert "CODE=1" in stdout and "no run in" in stderr and "run-all" in stderr


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless check needs Debian's chromium")
def test_report_renders_in_headless_chromium(run_copy, tmp_path):
    _probe("report", *overrides_for(run_copy))
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
         (run_copy / "report" / "index.html").as_uri()],
        capture_output=True, timeout=120, check=False,
    )
    assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 50_000  # a page with plots, not a blank one


TRAINING_STAGES = ("cold_sft", "reasoning_rl", "second_sft", "reward_model", "alignment_rl", "distill")


def test_every_training_stage_records_its_compute(smoke_run):
    """Steps, examples, tokens and FLOPs in each training stage's manifest, consistent with its config and log."""
    from r1pipe.training import read_jsonl

    for stage in TRAINING_STAGES:
        m = json.loads((smoke_run / stage / "manifest.json").read_text())
        metrics, trainer = m["metrics"], m["config"]["trainer"]
        c = metrics["compute"]
        per_step = trainer["per_device_train_batch_size"] * trainer.get("gradient_accumulation_steps", 1)
        assert c["optimizer_steps"] == metrics["global_step"] > 0, stage
        if trainer.get("max_steps", -1) > 0:
            assert c["optimizer_steps"] == trainer["max_steps"], stage
        assert c["examples"] == c["optimizer_steps"] * per_step, stage
        n = metrics["total_parameters"]
        if "num_generations" in trainer:  # GRPO: prompt + completion tokens of every completion, all sampled first
            logs = read_jsonl(smoke_run / stage / "metrics.jsonl")
            assert c["tokens"] == max(r["num_tokens"] for r in logs if "num_tokens" in r), stage
            sampled = sum(r["completions/mean_length"] * per_step for r in logs if "completions/mean_length" in r)
            assert c["generated_tokens"] == round(sampled) and 0 < c["generated_tokens"] < c["tokens"], stage
            assert c["flops"] == (8 + (2 if trainer.get("beta") else 0)) * n * c["tokens"], stage
        else:  # non-padding tokens: at most a full batch of max_length per example
            assert 0 < c["tokens"] <= c["examples"] * trainer["max_length"] * (2 if stage == "reward_model" else 1)
            assert "generated_tokens" not in c and c["flops"] == 6 * n * c["tokens"], stage
    # the matched controls: the cold-start data alone, for as many optimizer steps as the stage's own model took
    for stage in ("second_sft", "distill"):
        m = json.loads((smoke_run / stage / "manifest.json").read_text())
        assert m["metrics"]["baseline"]["compute"]["optimizer_steps"] == m["metrics"]["global_step"], stage
        assert (smoke_run / stage / m["outputs"]["baseline"] / "model" / "config.json").exists(), stage
        ev = json.loads((smoke_run / stage / "eval.json").read_text())
        assert "greedy_accuracy" in ev["baseline"] and "greedy_accuracy_diff" in ev["vs_baseline"], stage


def test_report_shows_compute_and_marks_comparisons_of_unequal_compute(tmp_path):
    """A stage's FLOPs add to those of the model it started from; a paired Δ across a 2x gap says so."""
    from r1pipe import plots, report

    def row(name, parents, flops, init=None, vs=()):
        ev = {f"vs_{p}": {"greedy_accuracy_diff": 0.05, "greedy_accuracy_diff_se": 0.01} for p in vs}
        ev |= {"greedy_accuracy": 0.5, "greedy_accuracy_se": 0.02}
        compute = {"optimizer_steps": 10, "examples": 80, "tokens": 1000, "flops": flops} if flops else None
        return report.StageRow(name, "complete", "", parents, {
            "config": {"init": init} if init else {}, "eval": ev, "metrics": {"compute": compute} if compute else {}})

    rows = [row("base", [], 0, vs=()),
            row("cold_sft", ["base"], 1e12, vs=("base",)),
            row("reasoning_rl", ["cold_sft"], 2e12, init="cold_sft", vs=("cold_sft",)),
            row("rejection_sampling", ["reasoning_rl"], 0),
            row("second_sft", ["base", "rejection_sampling"], 1.5e12, init="base", vs=("base",)),
            row("alignment_rl", ["second_sft"], 0.2e12, init="second_sft", vs=("second_sft",))]
    by_name = {r.name: r for r in rows}
    assert report.model_flops(by_name, "reasoning_rl") == 3e12  # cold_sft's weights came first
    assert report.model_flops(by_name, "second_sft") == 1.5e12  # from base: nothing of cold_sft's or RL's
    head, body = report.table(rows)
    cells = {r[0]: dict(zip(head, r)) for r in body}
    assert cells["reasoning_rl"]["Δ greedy vs parent"].endswith("(cold_sft) ⚠ 3.0× the compute")
    assert "⚠" not in cells["alignment_rl"]["Δ greedy vs parent"]  # 1.7e12 against 1.5e12
    assert "⚠" not in cells["cold_sft"]["Δ greedy vs parent"]  # base: no training of r1pipe's to compare with
    assert cells["cold_sft"]["compute"] == "10 steps, 1k tok, 1TFLOP" and cells["base"]["compute"] == ""
    assert plots.plot_accuracy(rows, tmp_path / "acc.png")
