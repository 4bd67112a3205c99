"""The run report: one page that shows what every stage of a run did, with numbers and pictures.

`r1pipe report conf=tiny` reads only what the stages wrote (manifests, metrics.jsonl, eval.json) and writes
`<run>/report/`:

    index.html     self-contained (CSS inline, plots embedded as base64 PNG): open it anywhere, mail it
    report.md      the same tables, the plots linked as files
    lineage.png    the stage graph as it ran, each node with its state and held-out accuracy
    loss.png       training loss over steps, one panel per training stage
    accuracy.png   held-out greedy accuracy and pass@1 by stage, with standard errors
    grpo_<stage>.png  per GRPO stage (reasoning_rl, alignment_rl), against step: the weighted reward, the
                   accuracy reward, the format reward (strict-format rate), completion length, KL to the
                   reference and any other reward function, one panel each

It never imports torch: matplotlib (Agg backend) draws the plots (r1pipe/plots.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1pipe import config as config_mod
from r1pipe import graph, stages, state
from r1pipe import plots as plots_mod
from r1pipe.errors import R1Error
from r1pipe.manifest import read_manifest, write_json_atomic, write_text_atomic
from r1pipe.plots import model_flops, si

REPORT_DIR = "report"


@dataclass
class StageRow:
    name: str
    state: str
    reason: str
    parents: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    metrics_log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eval(self) -> dict[str, Any]:
        return self.manifest.get("eval") or {}

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics") or {}


def collect(cfg) -> list[StageRow]:
    """Every stage of the recipe with its state, manifest and logged metrics (reads files only)."""
    root = config_mod.run_dir(cfg)
    rows = []
    for name, s in state.states(cfg).items():
        manifest = s.manifest or {}
        parents = [p["stage"] for p in manifest.get("parents", [])] or list(graph.parents_of(cfg, name))
        where = s.dir if s.complete else root / name  # its entry, else the one the run last linked
        rows.append(StageRow(name, s.state, s.reason, parents, manifest, read_metrics_log(where / "metrics.jsonl")))
    return rows


def read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """The per-step lines of a Trainer log; the summary line at the end of training (train_runtime) is not a step."""
    from r1pipe.training import read_jsonl  # skips a line torn by a crash

    return [row for row in read_jsonl(path) if isinstance(row, dict) and "step" in row and "train_runtime" not in row]


# --------------------------------------------------------------------------------------------- summaries


def key_metric(m: dict[str, Any]) -> str:
    """The one-line summary `status` and the report show for a manifest."""
    ev, metrics = m.get("eval") or {}, m.get("metrics") or {}
    parts = []
    if "greedy_accuracy" in ev:
        parts.append(f"greedy {100 * ev['greedy_accuracy']:.1f}%")
    if "pass@1" in ev:
        parts.append(f"pass@1 {100 * ev['pass@1']:.1f}%")
    if "acceptance_rate" in metrics:
        parts.append(f"{metrics['rows']} rows ({100 * metrics['acceptance_rate']:.0f}% kept)")
    if "accuracy" in (metrics.get("heldout") or {}):  # a reward model: held-out pair accuracy
        parts.append(f"pairs {100 * metrics['heldout']['accuracy']:.1f}% right")
    pref = (metrics.get("heldout_preference") or {}).get("helpfulness") or {}
    if "sampled_diff" in pref:
        parts.append(f"helpful {pref['sampled_diff']:+.2f}")
    if "vs_baseline" in ev and "greedy_accuracy_diff" in ev["vs_baseline"]:
        parts.append(f"vs baseline {100 * ev['vs_baseline']['greedy_accuracy_diff']:+.1f}")
    if not parts and "train_loss" in metrics:
        parts.append(f"loss {metrics['train_loss']:.3f}")
    if not parts and "parameters" in metrics:
        parts.append(f"{metrics['parameters'] / 1e6:.2f}M params")
    return " ".join(parts)


# The settings a reader wants first, in TRL's names; the full config is in each stage's config.yaml.
KEY_SETTINGS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "num_generations",
                "beta", "temperature", "max_completion_length")


def key_settings(config: dict[str, Any]) -> str:
    trainer = config.get("trainer") or {}
    parts = [f"{k}={trainer[k]}" for k in KEY_SETTINGS if trainer.get(k) not in (None, -1)]
    for k in ("k", "method", "init", "teacher"):
        if isinstance(config.get(k), (str, int, float)):
            parts.append(f"{k}={config[k]}")
    return ", ".join(parts)


def pct(value: float | None, se: float | None = None) -> str:
    if value is None:
        return ""
    return f"{100 * value:.1f}% ± {100 * se:.1f}" if se is not None else f"{100 * value:.1f}%"


def compute_cell(metrics: dict[str, Any]) -> str:
    """A training stage's compute record (training.compute_record) in one cell; distill's baseline beside it."""
    c = metrics.get("compute")
    if not isinstance(c, dict):
        return ""
    parts = [f"{c['optimizer_steps']} steps", f"{si(c['tokens'])} tok"]
    if c.get("generated_tokens"):
        parts.append(f"{si(c['generated_tokens'])} sampled")
    parts.append(f"{si(c['flops'])}FLOP")
    cell = ", ".join(parts)
    base = (metrics.get("baseline") or {}).get("compute")
    if isinstance(base, dict):
        cell += f"; baseline {base['optimizer_steps']} steps, {si(base['flops'])}FLOP"
    return cell


# A comparison is marked when one side's weights took at least this many times the other's training compute:
# a gain bought with more optimizer steps is not the stage's own effect (docs/compute.md).
COMPUTE_RATIO_MARK = 2.0


def compute_ratio(rows: dict[str, StageRow], name: str, other: str) -> float | None:
    """This model's training FLOPs over `other`'s; None when either took none that r1pipe counted."""
    mine, theirs = model_flops(rows, name), model_flops(rows, other)
    return mine / theirs if mine > 0 and theirs > 0 else None


def _diff_cell(rows: dict[str, StageRow], name: str, other: str, v: dict[str, Any]) -> str:
    cell = f"{100 * v['greedy_accuracy_diff']:+.1f} ± {100 * v['greedy_accuracy_diff_se']:.1f} ({other})"
    ratio = compute_ratio(rows, name, other)
    if ratio is not None and not 1 / COMPUTE_RATIO_MARK < ratio < COMPUTE_RATIO_MARK:
        cell += f" ⚠ {ratio:.1f}× the compute"
    return cell


def table(rows: list[StageRow]) -> tuple[list[str], list[list[str]]]:
    """The stage table: one row per stage, as plain strings (HTML and markdown render the same cells)."""
    head = ["stage", "state", "reads", "time", "compute", "key settings", "result", "greedy", "pass@1", "cons@k",
            "Δ greedy vs parent"]
    by_name = {r.name: r for r in rows}
    body = []
    for r in rows:
        ev = r.eval
        k = ev.get("k")
        diffs = [_diff_cell(by_name, r.name, key[3:], v) for key, v in ev.items()
                 if key.startswith("vs_") and isinstance(v, dict) and "greedy_accuracy_diff" in v]
        body.append([
            r.name,
            r.state,
            ", ".join(r.parents) or "config",
            f"{r.manifest['duration_s']:.0f} s" if "duration_s" in r.manifest else "",
            compute_cell(r.metrics),
            key_settings(r.manifest.get("config") or {}),
            key_metric(r.manifest),
            pct(ev.get("greedy_accuracy"), ev.get("greedy_accuracy_se")),
            pct(ev.get("pass@1"), ev.get("pass@1_se")),
            pct(ev.get(f"cons@{k}")) + (f" (k={k})" if k else "") if k else "",
            "; ".join(diffs),
        ])
    return head, body


# ------------------------------------------------------------------------------------------------ writers


def build(cfg) -> Path:
    """Write the report for cfg's run directory; returns the path of index.html."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only

    root = config_mod.run_dir(cfg)
    out = root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(cfg)
    plots = [(name, title, "") for name, title, fn in plots_mod.PLOTS if fn(rows, out / name)] + plots_mod.plot_grpo(rows, out)
    head, body = table(rows)
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"r1pipe run {root} (conf={cfg.preset})"
    evals = _eval_details(rows)
    (out / "report.md").write_text(_markdown(title, when, head, body, plots, evals))
    html_path = out / "index.html"
    write_text_atomic(html_path, _html(title, when, head, body, plots, evals, out))
    write_json_atomic(out / "summary.json", {"generated_at": when, "stages": {r.name: {"state": r.state, "eval": r.eval}
                                                                               for r in rows}})
    return html_path


def _eval_details(rows: list[StageRow]) -> list[list[str]]:
    """Per stage and benchmark: the protocol's numbers, strict format apart from lenient accuracy."""
    out = []
    for r in rows:
        ev = r.eval
        benches = {ev.get("benchmark", "heldout"): ev} if "n_problems" in ev else {}
        benches |= {k: v for k, v in (ev.get("benchmarks") or {}).items() if isinstance(v, dict)}
        for bench, m in benches.items():
            k = m.get("k")
            out.append([r.name, bench, str(m.get("n_problems", "")),
                        pct(m.get("greedy_accuracy"), m.get("greedy_accuracy_se")),
                        pct(m.get("pass@1"), m.get("pass@1_se")),
                        pct(m.get(f"cons@{k}"), m.get(f"cons@{k}_se")) if k else "",
                        pct(m.get("strict_format")),
                        f"{m['mean_think_chars']:.0f} / {m['mean_answer_chars']:.0f}" if "mean_think_chars" in m else "",
                        {True: "yes", False: "no: " + ", ".join(m.get("not_decontaminated_in", []))}.get(
                            m.get("decontaminated"), ""),
                        "hit" if (m.get("cache") or {}).get("hit") else "computed" if m.get("cache") else ""])
    return out


EVAL_HEAD = ["stage", "benchmark", "problems", "greedy", "pass@1", "cons@k", "strict format", "think / answer chars",
             "training data decontaminated", "cache"]


def md_table(head: list[str], body: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _markdown(title, when, head, body, plots, evals) -> str:
    parts = [f"# {title}", f"Generated {when} by `r1pipe report`.", "## Stages", md_table(head, body)]
    if evals:
        parts += ["## Evaluation (R1 protocol: pass@1 over k samples at T=0.6, top-p 0.95; ± one standard error)",
                  md_table(EVAL_HEAD, evals)]
    for name, plot_title, caption in plots:
        parts += [f"## {plot_title}", f"![{plot_title}]({name})"] + ([caption] if caption else [])
    return "\n\n".join(parts) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1200px;
color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;font-size:.85rem;width:100%}th,td{border:1px solid #ddd;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}tr:nth-child(even) td{background:#fafafa}
.complete{color:#1a7f37;font-weight:600}.stale{color:#9a6700}.partial{color:#0969da}.corrupt{color:#cf222e}
.missing{color:#888}img{max-width:100%;border:1px solid #eee;margin:.5rem 0}.meta{color:#666;font-size:.85rem}
"""


def _html_table(head: list[str], body: list[list[str]], state_col: int | None = None) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = []
    for row in body:
        tds = []
        for i, c in enumerate(row):
            cls = f' class="{html.escape(c)}"' if i == state_col else ""
            tds.append(f"<td{cls}>{html.escape(c)}</td>")
        trs.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>"


def _html(title, when, head, body, plots, evals, out: Path) -> str:
    sections = [f"<h1>{html.escape(title)}</h1>", f'<p class="meta">Generated {when} by <code>r1pipe report</code>. '
                "Every number is read from the stages' manifests, metrics.jsonl and eval.json.</p>",
                "<h2>Stages</h2>", _html_table(head, body, state_col=1)]
    if evals:
        sections += ["<h2>Evaluation</h2><p class=\"meta\">R1's protocol: greedy accuracy; pass@1 = mean correctness "
                     "over k samples at temperature 0.6, top-p 0.95; cons@k = majority vote; strict format counted "
                     "apart from lenient answer accuracy; ± one standard error over problems.</p>",
                     _html_table(EVAL_HEAD, evals)]
    for name, plot_title, caption in plots:
        data = base64.b64encode((out / name).read_bytes()).decode()
        sections.append(f'<h2>{html.escape(plot_title)}</h2><img alt="{html.escape(plot_title)}" '
                        f'src="data:image/png;base64,{data}">')
        if caption:
            sections.append(f'<p class="meta">{html.escape(caption)}</p>')
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n")


# ---------------------------------------------------------------------------------------------- across seeds


def seed_run_dir(root: Path, seed: int) -> Path:
    """Where `r1pipe seeds` puts one seed's run: beside the run directory, e.g. runs/tiny-seed3."""
    return root.with_name(f"{root.name}-seed{seed}")


def _spread(values: list[float]) -> str:
    import statistics

    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * sd:.1f} ({100 * min(values):.1f}–{100 * max(values):.1f})"


def across_seeds(evals: dict[int, dict[str, dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """One row per (stage, comparison) from each seed's eval.json numbers ({seed: {stage: eval}}): the mean,
    standard deviation and range over the seeds, each seed's paired difference with its parent, and how many
    seeds show the difference beyond one standard error of its own (up and down). Evaluated stages only."""
    head = ["stage", "seeds", "greedy: mean ± sd (range)", "pass@1: mean ± sd (range)", "vs",
            "Δ pass@1 per seed (± SE)", "seeds Δ pass@1 > +1 SE / < −1 SE", "Δ greedy per seed (± SE)",
            "seeds Δ greedy > +1 SE / < −1 SE"]
    stages = list(dict.fromkeys(s for run in evals.values() for s, ev in run.items() if "greedy_accuracy" in ev))
    body = []
    for stage in stages:
        runs = {seed: run[stage] for seed, run in sorted(evals.items()) if "greedy_accuracy" in run.get(stage, {})}
        greedy = [ev["greedy_accuracy"] for ev in runs.values()]
        sampled = [ev["pass@1"] for ev in runs.values() if ev.get("pass@1") is not None]
        row = [stage, ", ".join(str(s) for s in runs), _spread(greedy), _spread(sampled) if sampled else ""]
        others = list(dict.fromkeys(k for ev in runs.values() for k, v in ev.items()
                                    if k.startswith("vs_") and isinstance(v, dict) and "greedy_accuracy_diff" in v))
        if not others:
            body.append(row + [""] * 5)
        for key in others:
            cells = []
            for metric in ("pass@1", "greedy_accuracy"):
                diffs = [(ev[key][f"{metric}_diff"], ev[key][f"{metric}_diff_se"]) for ev in runs.values()
                         if f"{metric}_diff" in ev.get(key, {})]
                cells.append(", ".join(f"{100 * d:+.1f} ± {100 * se:.1f}" for d, se in diffs))
                cells.append(f"{sum(d > se for d, se in diffs)} / {sum(d < -se for d, se in diffs)} of {len(diffs)}")
            body.append(row + [key[3:]] + cells)
    return head, body


def read_seed_evals(cfg, seeds: list[int]) -> dict[int, dict[str, dict[str, Any]]]:
    """Each seed's run directory's eval.json numbers per stage, from the manifests (no torch)."""
    root = config_mod.run_dir(cfg)
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for seed in seeds:
        run = seed_run_dir(root, seed)
        out[seed] = {name: (read_manifest(run / name) or {}).get("eval") or {}
                     for name in stages.names() if (run / name).is_dir()}
    return out


def seeds_markdown(cfg, seeds: list[int]) -> str:
    """One table for the headline benchmark, then one for each other benchmark the stages were evaluated on
    (a second held-out set tells a gain from tuning to the first)."""
    evals = read_seed_evals(cfg, seeds)
    if not any(evals.values()):
        raise R1Error(f"no run of seeds {', '.join(map(str, seeds))} under {config_mod.run_dir(cfg)}-seed*",
                      hint="run them first: r1pipe seeds --seeds ... (without --summary-only)")
    headline = next((ev["benchmark"] for run in evals.values() for ev in run.values() if ev.get("benchmark")), "")
    tables = [f"### {headline}\n\n{md_table(*across_seeds(evals))}"]
    others = dict.fromkeys(b for run in evals.values() for ev in run.values() for b in ev.get("benchmarks") or {})
    for name in others:
        per = {seed: {stage: (ev.get("benchmarks") or {}).get(name, {}) for stage, ev in run.items()}
               for seed, run in evals.items()}
        tables.append(f"### {name}\n\n{md_table(*across_seeds(per))}")
    return "\n\n".join(tables)
