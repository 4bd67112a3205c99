"""The run report's plots, drawn with matplotlib (Agg backend: files only, no display) from the rows
`report.collect` reads: each row has a stage's name, state, manifest, eval and logged metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def si(value: float) -> str:
    """1234567 -> '1.2M': compute figures span orders of magnitude, and a reader compares their size."""
    for div, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.3g}{unit}"
    return f"{value:.3g}"


def model_flops(rows: dict, name: str, _seen: frozenset = frozenset()) -> float:
    """Training FLOPs in a model's weights: its stage's own plus those of the model it started from (the
    stage's `init:`, else its parent `base`), back to the pretrained or freshly built model (0: not r1pipe's)."""
    r = rows.get(name)
    if r is None or name in _seen:
        return 0.0
    own = float(((r.metrics.get("compute") or {}).get("flops")) or 0.0)
    init = (r.manifest.get("config") or {}).get("init")
    start = init if isinstance(init, str) and init in r.parents else ("base" if "base" in r.parents else None)
    return own + (model_flops(rows, start, _seen | {name}) if start else 0.0)


def _series(log: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(row["step"], row[key]) for row in log if isinstance(row.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _panels(n: int, title: str, height: float = 2.6):
    import matplotlib.pyplot as plt

    cols = min(n, 3)
    rows_ = -(-n // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, height * rows_), squeeze=False)
    fig.suptitle(title, fontsize=11)
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.set_visible(False)
    return fig, flat[:n]


def plot_loss(rows: list, path: Path) -> bool:
    trained = [r for r in rows if _series(r.metrics_log, "loss")[0]]
    if not trained:
        return False
    fig, axes = _panels(len(trained), "training loss")
    for ax, r in zip(axes, trained):
        ax.plot(*_series(r.metrics_log, "loss"), color="#1f77b4", lw=1.3)
        rl = bool(_reward_functions(r.metrics_log))  # GRPO's loss is a surrogate near zero, not a fit measure
        ax.set_title(f"{r.name} (GRPO surrogate)" if rl else r.name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _reward_functions(log: list[dict[str, Any]]) -> list[str]:
    names = {k.split("/")[1] for row in log for k in row if k.startswith("rewards/") and k.endswith("/mean")}
    return sorted(names)


# One figure per GRPO stage, one panel per signal, so that no curve hides another: (panel title, metrics.jsonl
# key, y range). Rates share a fixed 0..1 axis, so a flat zero reads as zero and not as noise.
GRPO_PANELS = (
    ("reward (weighted sum)", "reward", None),
    ("accuracy reward", "rewards/accuracy/mean", (-0.03, 1.03)),
    ("format reward (strict-format rate)", "rewards/format/mean", (-0.03, 1.03)),
    ("completion length, tokens", "completions/mean_length", None),
    ("KL to the reference", "kl", None),
)


def plot_grpo(rows: list, out: Path) -> list[tuple[str, str, str]]:
    """grpo_<stage>.png for each stage that logged rewards: its training curves against step. Returns
    (file, title, caption) per figure; the caption names every series drawn and its metrics.jsonl key."""
    figures = []
    for r in rows:
        if _reward_functions(r.metrics_log):
            name = f"grpo_{r.name}.png"
            drawn = _plot_grpo_stage(r, out / name)
            figures.append((name, f"{r.name}: GRPO training curves",
                            "Against step, from metrics.jsonl: " + "; ".join(drawn) + "."))
    return figures


def _plot_grpo_stage(r, path: Path) -> list[str]:
    from matplotlib.ticker import MaxNLocator

    others = [fn for fn in _reward_functions(r.metrics_log) if fn not in ("accuracy", "format")]
    fig, axes = _panels(len(GRPO_PANELS) + bool(others), f"{r.name}: GRPO training curves", height=2.5)
    drawn = []
    for ax, (title, key, ylim) in zip(axes, GRPO_PANELS):
        xs, ys = _series(r.metrics_log, key)
        ax.plot(xs, ys, lw=1.4, color="#d62728" if key == "kl" else "#1f77b4", marker="." if len(xs) < 30 else None)
        if key == "completions/mean_length":  # the spread: R1's lengths grow at the long end first
            lo, hi = _series(r.metrics_log, "completions/min_length"), _series(r.metrics_log, "completions/max_length")
            if lo[0] and lo[0] == hi[0] == xs:
                ax.fill_between(xs, lo[1], hi[1], color="#1f77b4", alpha=0.15, lw=0, label="min to max")
                ax.legend(fontsize=6, loc="best")
        if ylim:
            ax.set_ylim(*ylim)
        if not xs:
            ax.text(0.5, 0.5, "not logged (beta = 0)" if key == "kl" else "not logged", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
        drawn.append(f"{title}: `{key}`" if xs else f"{title}: not logged")
        ax.set_title(title, fontsize=9)
    if others:  # language consistency, preference rewards, ...: each unweighted, as GRPO logs them
        ax = axes[-1]
        for fn in others:
            xs, ys = _series(r.metrics_log, f"rewards/{fn}/mean")
            ax.plot(xs, ys, lw=1.2, label=fn, marker="." if len(xs) < 30 else None)
            drawn.append(f"{fn} reward: `rewards/{fn}/mean`" if xs else f"{fn} reward: not logged")
        ax.set_title("other reward functions", fontsize=9)
        ax.legend(fontsize=6, loc="best")
    for ax in axes:
        ax.set_xlabel("step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    _save(fig, path)
    return drawn


def plot_accuracy(rows: list, path: Path) -> bool:
    import matplotlib.pyplot as plt

    bars = []  # (label, greedy, greedy_se, pass@1, pass@1_se)
    by_name = {r.name: r for r in rows}
    for r in rows:
        ev = r.eval
        # each bar says how much training its weights took, so a gain is read beside what it cost
        flops = model_flops(by_name, r.name)
        cost = f"\n{si(flops)}FLOP" if flops else ""
        if "greedy_accuracy" in ev or "pass@1" in ev:
            label = r.name if ev.get("benchmark", "heldout") == "heldout" else f"{r.name}\n({ev['benchmark']})"
            bars.append((label + cost, ev.get("greedy_accuracy"), ev.get("greedy_accuracy_se"), ev.get("pass@1"),
                         ev.get("pass@1_se")))
        for key, extra in ev.items():  # distill's baseline student, evaluated beside it
            if isinstance(extra, dict) and "greedy_accuracy" in extra and "n_problems" in extra:
                c = (r.metrics.get(key) or {}).get("compute") or {}
                bars.append((f"{r.name}\n({key})" + (f"\n{si(c['flops'])}FLOP" if c.get("flops") else ""),
                             extra.get("greedy_accuracy"), extra.get("greedy_accuracy_se"),
                             extra.get("pass@1"), extra.get("pass@1_se")))
    if not bars:
        return False
    fig, ax = plt.subplots(figsize=(max(6.0, 1.25 * len(bars) + 2), 3.6))
    xs = range(len(bars))
    w = 0.38
    for off, idx, label, color in ((-w / 2, 1, "greedy", "#1f77b4"), (w / 2, 3, "pass@1 (T=0.6)", "#ff7f0e")):
        shown = [(x, b) for x, b in zip(xs, bars) if b[idx] is not None]  # not measured: no bar, not a zero
        if not shown:
            continue
        rects = ax.bar([x + off for x, _ in shown], [100 * b[idx] for _, b in shown], w,
                       yerr=[100 * (b[idx + 1] or 0) for _, b in shown], capsize=3, label=label, color=color)
        ax.bar_label(rects, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("held-out accuracy, %")
    ax.set_ylim(0, 105)
    ax.set_title("held-out accuracy by stage, with the training FLOPs in its weights (error bars: one standard error)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_sweep_accuracy(lines: list[tuple[str, dict[str, tuple[float, float | None]]]], stages: list[str],
                        path: Path) -> bool:
    """A sweep's members side by side: greedy accuracy by stage (x, in recipe order), a line per member
    ((label, {stage: (accuracy, se)})). Lines, not bars: a reader follows one member through the recipe."""
    import matplotlib.pyplot as plt

    drawn = [(label, points) for label, points in lines if points]
    if not drawn or not stages:
        return False
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(stages) + 2), 3.8))
    jitter = 0.12 / max(1, len(drawn) - 1)  # error bars of equal stages side by side, not on top of each other
    for n, (label, points) in enumerate(drawn):
        xs = [i for i, s in enumerate(stages) if s in points]
        ax.errorbar([x + (n - (len(drawn) - 1) / 2) * jitter for x in xs],
                    [100 * points[stages[x]][0] for x in xs], yerr=[100 * (points[stages[x]][1] or 0) for x in xs],
                    marker="o", ms=4, lw=1.3, capsize=3, label=label)
    ax.set_xticks(range(len(stages)), stages, fontsize=8)
    ax.set_xlim(-0.5, len(stages) - 0.5)
    ax.set_ylabel("held-out greedy accuracy, %")
    ax.set_ylim(0, 105)
    ax.set_title("greedy accuracy by stage, a line per sweep member\n(error bars: one standard error)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_lineage(rows: list, path: Path) -> bool:
    """The stage graph as it ran: columns by depth (a stage sits right of everything it reads)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    depth: dict[str, int] = {}
    for r in rows:  # rows are in graph order, so parents come first
        depth[r.name] = 1 + max((depth[p] for p in r.parents if p in depth), default=-1)
    # A side branch (reward_model) sits just before the stage that reads it, not beside the one it reads.
    children = {r.name: [c.name for c in rows if r.name in c.parents] for r in rows}
    for r in reversed(rows):
        if children[r.name] and r.parents:
            depth[r.name] = max(depth[r.name], min(depth[c] for c in children[r.name]) - 1)
    columns: dict[int, list[str]] = {}
    for r in rows:
        columns.setdefault(depth[r.name], []).append(r.name)
    pos = {name: (d, -i) for d, names in columns.items() for i, name in enumerate(names)}
    colors = {"complete": "#d8f0d8", "stale": "#fff2c2", "partial": "#d6ecf7", "corrupt": "#f7d4d4", "missing": "#eeeeee"}
    tall = max(len(v) for v in columns.values())
    fig, ax = plt.subplots(figsize=(2.1 * len(columns) + 0.5, 1.35 * tall + 0.6))
    by_name = {r.name: r for r in rows}
    for r in rows:
        for p in r.parents:
            if p in pos:
                (x0, y0), (x1, y1) = pos[p], pos[r.name]
                if y0 == y1 and x1 - x0 > 1:  # skips columns: arc under the boxes in between
                    start, end, style = (x0, y0 - 0.3), (x1, y1 - 0.3), "arc3,rad=0.25"
                elif y1 < y0:  # down to a side branch: leave from the bottom edge, clear of the row's boxes
                    start, end, style = (x0 + 0.2, y0 - 0.3), (x1 - 0.42, y1), "arc3,rad=0.1"
                else:
                    start, end, style = (x0 + 0.42, y0), (x1 - 0.42, y1), "arc3,rad=0.0"
                ax.annotate("", xy=end, xytext=start,
                            arrowprops=dict(arrowstyle="-|>", color="#555555", lw=1.1, connectionstyle=style))
    for name, (x, y) in pos.items():
        r = by_name[name]
        ax.add_patch(FancyBboxPatch((x - 0.42, y - 0.3), 0.84, 0.6, boxstyle="round,pad=0.02",
                                    fc=colors.get(r.state, "#eeeeee"), ec="#333333", lw=1))
        ev = r.eval
        sub = f"greedy {100 * ev['greedy_accuracy']:.1f}%" if "greedy_accuracy" in ev else r.state
        ax.text(x, y + 0.09, name, ha="center", va="center", fontsize=8.5, weight="bold")
        ax.text(x, y - 0.13, sub, ha="center", va="center", fontsize=7.5)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylim(-tall + 0.4, 0.6)
    ax.axis("off")
    ax.set_title("lineage (arrows: which stage's output each stage reads)", fontsize=10)
    return _save(fig, path)


def _save(fig, path: Path) -> bool:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


PLOTS = (
    ("lineage.png", "Lineage", plot_lineage),
    ("accuracy.png", "Held-out accuracy by stage", plot_accuracy),
    ("loss.png", "Training loss", plot_loss),
)  # then plot_grpo's figures, one per GRPO stage
