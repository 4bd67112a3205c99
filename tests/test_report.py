"""`r1pipe report`: a self-contained HTML page and a markdown twin, with real plots drawn from the run's files."""

import base64
import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import overrides_for
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
    from r1pipe import report

    log = [{"step": i, "reward": 0.5 * i, "rewards/accuracy/mean": 0.25 * i, "completions/mean_length": 10.0 + i}
           for i in (1, 2, 3)]  # no format reward, no KL (beta = 0), no other reward function
    rows = [report.StageRow("reasoning_rl", "complete", "", ["cold_sft"], metrics_log=log),
            report.StageRow("cold_sft", "complete", "", ["base"], metrics_log=[{"step": 1, "loss": 2.0}])]
    [(name, title, caption)] = report.plot_grpo(rows, tmp_path)
    assert name == "grpo_reasoning_rl.png" and (tmp_path / name).read_bytes().startswith(PNG)
    assert "accuracy reward: `rewards/accuracy/mean`" in caption and "`completions/mean_length`" in caption
    assert "format reward (strict-format rate): not logged" in caption and "KL to the reference: not logged" in caption


def test_report_of_a_partial_run_shows_what_is_missing(run_copy):
    shutil.rmtree(run_copy / "distill")
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
