"""Launchers: the commands r1pipe builds for torchrun / accelerate, and stages really run by two processes
(torchrun, gloo on this CPU): one manifest, both ranks recorded, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import overrides_for

from r1pipe import checks, config, launch, runner, state
from r1pipe.errors import R1Error

TORCHRUN = ("launcher=torchrun", "launcher.nproc=2")


def _launcher(*ov):
    return launch.spec(config.load(["conf=smoke", *ov]))


# ---------------------------------------------------------------------------------------------------------
# Commands and checks (no process started)


def test_local_is_the_default_and_distributes_nothing():
    from r1pipe import stages

    spec = _launcher()
    assert spec == {"name": "local"} and launch.world_size(spec) == 1
    assert not launch.distributes(spec, stages.get("cold_sft"))


def test_torchrun_command_one_node_and_several(tmp_path):
    spec = _launcher(*TORCHRUN)
    argv = launch.command(spec, "cold_sft", tmp_path)
    assert argv[:4] == [sys.executable, "-m", "r1pipe.quiet_launch", "torchrun"]  # torchrun, minus its traceback
    assert "--nproc_per_node=2" in argv and "--standalone" in argv
    assert argv[-3:] == ["-m", "r1pipe.worker", str(tmp_path)]

    spec = _launcher("launcher=torchrun", "launcher.nproc=8", "launcher.nnodes=4", "launcher.node_rank=3",
                     "launcher.rdzv_endpoint=node0:29500")
    argv = launch.command(spec, "reasoning_rl", tmp_path)
    assert launch.world_size(spec) == 32 and launch.is_follower(spec)
    for a in ("--nnodes=4", "--node_rank=3", "--rdzv_endpoint=node0:29500", "--rdzv_id=r1pipe-reasoning_rl"):
        assert a in argv
    assert "--standalone" not in argv


@pytest.mark.parametrize("preset,dtype", [("accelerate", "MULTI_GPU"), ("deepspeed_zero2", "DEEPSPEED"),
                                          ("deepspeed_zero3", "DEEPSPEED"), ("fsdp", "FSDP")])
def test_accelerate_presets_write_a_config_whose_counts_match(tmp_path, preset, dtype):
    spec = _launcher(f"launcher={preset}", "launcher.nnodes=2", "launcher.rdzv_endpoint=10.0.0.1:29400")
    launch.check(spec)
    acc = launch.accelerate_config(spec)
    assert acc["distributed_type"] == dtype
    assert (acc["num_processes"], acc["num_machines"], acc["machine_rank"]) == (launch.world_size(spec), 2, 0)
    argv = launch.command(spec, "cold_sft", tmp_path)
    assert argv[:4] == [sys.executable, "-m", "r1pipe.quiet_launch", "accelerate"]
    assert f"--num_processes={launch.world_size(spec)}" in argv and "--main_process_ip=10.0.0.1" in argv
    assert launch.requirements(spec) == (["deepspeed"] if dtype == "DEEPSPEED" else [])


@pytest.mark.parametrize("ov,message", [
    (("launcher=torchrun", "launcher.nnodes=2"), "needs launcher.rdzv_endpoint"),
    (("launcher=torchrun", "launcher.nnodes=2", "launcher.node_rank=2", "launcher.rdzv_endpoint=h:1"),
     "launcher.node_rank=2 is not below launcher.nnodes=2"),
    (("launcher=torchrun", "launcher.nproc=0"), "launcher.nproc=0 must be a whole number >= 1"),
    (("launcher=accelerate", "launcher.config.distributed_type=MULTI_CPU"), "MULTI_CPU would start one process"),
    (("launcher=torchrun", "launcher.name=mpirun"), "launcher.name='mpirun' is not a launcher"),
])
def test_bad_launcher_settings_fail_before_anything_runs(tmp_path, ov, message):
    ov = overrides_for(tmp_path / "run", *ov)
    with pytest.raises(R1Error, match=message):
        runner.run_all(config.load(ov), ov)
    assert not (tmp_path / "run" / "base").exists()


def test_grpo_batch_arithmetic_counts_the_processes(tmp_path):
    """Whole groups per generation batch, counted at the launched world size, both ways: 1 completion per
    device with groups of 2 is fine on 2 processes (TRL, checking in the launching process, would refuse it)
    and refused in one;
    3 per device on 3 processes (9) is refused with the arithmetic spelled out."""
    ok = overrides_for(tmp_path, "launcher=torchrun", "launcher.nproc=2",
                       "reasoning_rl.trainer.per_device_train_batch_size=1", "reasoning_rl.trainer.num_generations=2")
    checks.validate(config.load(ok), ["reasoning_rl"])
    with pytest.raises(R1Error, match="1 process x per_device_train_batch_size 1 x 1 steps per generation = 1 "):
        checks.validate(config.load([o for o in ok if not o.startswith("launcher")]), ["reasoning_rl"])
    bad = overrides_for(tmp_path, "launcher=torchrun", "launcher.nproc=3",
                        "reasoning_rl.trainer.per_device_train_batch_size=3", "reasoning_rl.trainer.num_generations=2")
    with pytest.raises(R1Error, match="3 processes x per_device_train_batch_size 3 x 1 steps per generation = 9 "
                                      "completions, not a multiple of num_generations 2"):
        checks.validate(config.load(bad), ["reasoning_rl"])


def test_a_missing_deepspeed_is_one_clear_line_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "not_installed", lambda pkgs: list(pkgs))  # as on a machine without it
    ov = overrides_for(tmp_path, "launcher=deepspeed_zero2", "launcher.nproc=2")
    with pytest.raises(R1Error, match=r"launcher needs deepspeed, which is not installed.*r1pipe\[deepspeed\]"):
        runner.run_all(config.load(ov), ov)
    assert not (tmp_path / "base").exists()


def test_run_all_refuses_several_nodes(tmp_path):
    ov = overrides_for(tmp_path, "launcher=torchrun", "launcher.nnodes=2", "launcher.rdzv_endpoint=h:1")
    with pytest.raises(R1Error, match="run-all runs on one node"):
        runner.run_all(config.load(ov), ov)


def test_a_follower_node_of_a_complete_stage_starts_nothing(smoke_run, monkeypatch):
    started = []
    monkeypatch.setattr(launch, "_wait", lambda *a, **k: started.append(a) or 0)
    ov = overrides_for(smoke_run, "launcher=torchrun", "launcher.nnodes=2", "launcher.node_rank=1",
                       "launcher.rdzv_endpoint=h:1")
    assert runner.run_stage(config.load(ov), "cold_sft", ov) is None
    assert started == []


# ---------------------------------------------------------------------------------------------------------
# Two real processes


def _manifest(run_dir, stage):
    return json.loads((run_dir / stage / "manifest.json").read_text())


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sft_and_grpo_train_under_torchrun_with_two_processes(run_copy):
    """cold_sft, then reasoning_rl from it, each trained by two torchrun processes: one manifest per stage
    naming both ranks (distinct processes), twice the examples per step, weights changed and loadable."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    before = load_file(run_copy / "cold_sft" / "model" / "model.safetensors")
    ov = overrides_for(run_copy, *TORCHRUN, "cold_sft.trainer.learning_rate=5e-4", "eval.after_stage=false")
    steps = runner.run_all(config.load(ov), ov, stop="reasoning_rl")
    assert [(s.stage, s.action) for s in steps] == [("base", "skip"), ("cold_sft", "run"), ("reasoning_rl", "run")]
    for stage in ("cold_sft", "reasoning_rl"):
        m = _manifest(run_copy, stage)
        assert m["launch"]["launcher"] == "torchrun" and m["launch"]["world_size"] == 2
        ranks = m["launch"]["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1] and len({r["pid"] for r in ranks}) == 2
        assert os.getpid() not in {r["pid"] for r in ranks}  # the work ran in the launched processes
        assert not (run_copy / stage / ".launch").exists()
        assert len(list((run_copy / stage).glob("**/manifest.json"))) == 1
    sft = _manifest(run_copy, "cold_sft")["metrics"]
    # 6 steps x 8 examples x 2 processes = 96 examples over a 64-example set: 1.5 epochs (one process: 0.75)
    logged = [json.loads(line) for line in (run_copy / "cold_sft" / "metrics.jsonl").read_text().splitlines()]
    assert sft["global_step"] == 6 and logged[-1]["epoch"] == pytest.approx(1.5)
    after = load_file(run_copy / "cold_sft" / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    model = AutoModelForCausalLM.from_pretrained(run_copy / "reasoning_rl" / "model")
    assert model.num_parameters() > 0 and not any((run_copy / "reasoning_rl" / "model").glob("*.bin"))
    assert _manifest(run_copy, "reasoning_rl")["metrics"]["global_step"] == 4


def _kill_after_first_checkpoint(run_dir, ov, timeout: float = 300) -> None:
    """Start `r1pipe run --stage cold_sft` with overrides `ov` (save_steps=5), SIGKILL the r1pipe process alone
    once checkpoint-5 is whole, and wait for its two launched ranks to die with it (they must)."""
    from r1pipe.manifest import read_json_dict

    cmd = [sys.executable, "-m", "r1pipe.cli", "run", "--stage", "cold_sft", "--force", *ov]
    ckpt = run_dir / "cold_sft" / "trainer" / "checkpoint-5" / "trainer_state.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while read_json_dict(ckpt) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # whole: a checkpoint killed mid-write is rightly not resumed from
    assert read_json_dict(ckpt) is not None, "training never reached a checkpoint"
    ranks = [json.loads(p.read_text()) for p in (run_dir / "cold_sft" / ".launch").glob("rank-*.json")]
    assert len(ranks) == 2
    proc.send_signal(signal.SIGKILL)  # the bookkeeper only, not its process group
    proc.wait()
    deadline = time.time() + 60
    while any(_alive(r["pid"]) for r in ranks) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(r["pid"]) for r in ranks), "workers outlived the r1pipe that launched them"
    assert not (run_dir / "cold_sft" / "manifest.json").exists()


def test_killed_launch_stops_its_workers_and_resumes(run_copy):
    """SIGKILL the r1pipe process alone while its two workers train: the workers die with it (nothing goes
    on writing into the run), the lock is free, and the rerun resumes from the last checkpoint."""
    extra = (*TORCHRUN, "cold_sft.trainer.max_steps=30", "cold_sft.trainer.save_steps=5", "eval.after_stage=false")
    ov = overrides_for(run_copy, *extra)
    _kill_after_first_checkpoint(run_copy, ov, timeout=180)
    assert state.states(config.load(ov))["cold_sft"].state == "partial"

    runner.run_stage(config.load(ov), "cold_sft", ov)
    m = _manifest(run_copy, "cold_sft")
    assert m["resumed"] is True and m["metrics"]["resumed_from_step"] >= 5 and m["metrics"]["global_step"] == 30
    assert m["launch"]["world_size"] == 2


def _sharded_launchers():
    """Where a sharding launcher can run here: DeepSpeed ZeRO-3 on CPU processes (its CPU accelerator, when
    deepspeed is installed: make test does), FSDP only on 2+ GPUs (accelerate shards with FSDP on GPUs
    alone; on CPU processes r1pipe refuses it, see below)."""
    import importlib.util

    import torch

    cpu = ("launcher.config.use_cpu=true", "launcher.config.mixed_precision=no")
    gpu = ("cold_sft.trainer.use_cpu=false", "reasoning_rl.trainer.use_cpu=false")
    return [
        pytest.param(("launcher=deepspeed_zero3", "launcher.nproc=2", *cpu), "DEEPSPEED", id="deepspeed_zero3-cpu",
                     marks=pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                              reason="deepspeed is not installed (make test installs it)")),
        pytest.param(("launcher=fsdp", "launcher.nproc=2", *gpu), "FSDP", id="fsdp-2gpu",
                     marks=pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP needs 2 GPUs")),
    ]


@pytest.mark.parametrize("launcher, distributed", _sharded_launchers())
def test_a_sharding_launcher_trains_resumes_after_a_kill_and_runs_grpo(run_copy, monkeypatch, launcher, distributed):
    """Weights sharded across two processes (ZeRO-3 or FSDP): cold_sft killed after its first checkpoint
    resumes from it and completes; reasoning_rl trains from it with TRL's rollouts (rollouts=auto, since the
    engine cannot sample from shards); both models are whole and load with plain transformers."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    # the launched ranks import the test reward from conftest, as a user's module:function from their path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])))
    ov = overrides_for(run_copy, *launcher, "cold_sft.trainer.max_steps=20", "cold_sft.trainer.save_steps=5",
                       "cold_sft.trainer.learning_rate=5e-4", "eval.after_stage=false",
                       "+reasoning_rl.rewards.chars={function: 'conftest:char_length_reward', weight: 1.0}")
    _kill_after_first_checkpoint(run_copy, ov)
    assert state.states(config.load(ov))["cold_sft"].state == "partial"

    before = load_file(run_copy / "base" / "model" / "model.safetensors")
    runner.run_stage(config.load(ov), "cold_sft", ov)
    sft = _manifest(run_copy, "cold_sft")
    assert sft["metrics"]["distributed"] == distributed and sft["launch"]["world_size"] == 2
    assert sft["resumed"] is True and sft["metrics"]["resumed_from_step"] >= 5 and sft["metrics"]["global_step"] == 20
    assert sft["metrics"]["total_parameters"] == sum(t.numel() for t in before.values())  # counted whole, not a shard
    after = load_file(run_copy / "cold_sft" / "model" / "model.safetensors")
    assert set(after) == set(before) and any(not torch.equal(before[k], after[k]) for k in before)  # whole, trained

    runner.run_stage(config.load(ov), "reasoning_rl", ov)
    rl = _manifest(run_copy, "reasoning_rl")["metrics"]
    assert rl["distributed"] == distributed and rl["rollouts"] == "trl" and rl["global_step"] == 4
    grpo = load_file(run_copy / "reasoning_rl" / "model" / "model.safetensors")
    assert set(grpo) == set(after) and any(not torch.equal(after[k], grpo[k]) for k in after)
    assert AutoModelForCausalLM.from_pretrained(run_copy / "reasoning_rl" / "model").num_parameters() > 0


def test_fsdp_on_cpu_processes_is_refused_before_anything_runs(tmp_path):
    """accelerate turns FSDP on for GPU process groups only: with use_cpu it would train plain DDP and say
    nothing (seen: the trainer reported MULTI_CPU). r1pipe says so before any work."""
    ov = overrides_for(tmp_path, "launcher=fsdp", "launcher.nproc=2", "launcher.config.use_cpu=true")
    with pytest.raises(R1Error, match="launcher=fsdp with launcher.config.use_cpu=true would train plain DDP"):
        checks.validate(config.load(ov), ["cold_sft"])


def test_a_failing_rank_is_one_line_and_costs_nothing(run_copy):
    from conftest import snapshot

    before = snapshot(run_copy)
    ov = overrides_for(run_copy, *TORCHRUN, "cold_sft.data={path: /nonexistent/cot.jsonl}")
    r = subprocess.run([sys.executable, "-m", "r1pipe.cli", "run", "--stage", "cold_sft", *ov],
                       capture_output=True, text=True)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cold_sft (rank 0 of 2): data file /nonexistent/cot.jsonl does not exist"), last
    assert "Traceback" not in r.stderr
    assert snapshot(run_copy) == before


def test_accelerate_starts_two_processes_on_a_cpu(run_copy):
    """launcher=accelerate's MULTI_GPU + use_cpu mode really starts two (where MULTI_CPU would start one)."""
    ov = overrides_for(run_copy, "launcher=accelerate", "launcher.nproc=2", "launcher.config.use_cpu=true",
                       "cold_sft.trainer.learning_rate=5e-4", "eval.after_stage=false")
    runner.run_stage(config.load(ov), "cold_sft", ov)
    m = _manifest(run_copy, "cold_sft")
    assert m["launch"]["launcher"] == "accelerate" and len({r["pid"] for r in m["launch"]["ranks"]}) == 2


def test_fewer_processes_than_asked_is_refused(tmp_path):
    """The check behind every launch: a launcher that quietly starts one process is an error, not a result."""
    from r1pipe.context import StageContext
    from r1pipe.manifest import write_json_atomic

    ctx = StageContext(name="cold_sft", config={}, dir=tmp_path, parent_manifests={}, parent_dirs={}, seed=0,
                       resume=False)
    write_json_atomic(tmp_path / "rank-0.json", {"rank": 0, "pid": 1})
    write_json_atomic(tmp_path / launch.RESULT, {"metrics": {"global_step": 3}, "outputs": {"model": "model"}})
    with pytest.raises(R1Error, match="accelerate was asked for 2 processes but 1 ran"):
        launch.collect(ctx, tmp_path, world=2, rc=0, name="accelerate")
    write_json_atomic(tmp_path / "rank-1.json", {"rank": 1, "pid": 2})
    assert launch.collect(ctx, tmp_path, world=2, rc=0, name="accelerate") == {"global_step": 3}
    assert ctx.outputs == {"model": "model"} and ctx.launch["world_size"] == 2
    with pytest.raises(R1Error, match="exited with status 1"):
        launch.collect(ctx, tmp_path, world=2, rc=1, name="accelerate")
    # a launcher asked to shard whose trainer ran without it: refused, not recorded as FSDP work
    write_json_atomic(tmp_path / launch.RESULT, {"metrics": {"global_step": 3, "distributed": "MULTI_CPU"}})
    with pytest.raises(R1Error, match="asked for FSDP, but the ranks trained with MULTI_CPU"):
        launch.collect(ctx, tmp_path, world=2, rc=0, name="accelerate", expect="FSDP")
    assert launch.collect(ctx, tmp_path, world=2, rc=0, name="accelerate", expect=None)["distributed"] == "MULTI_CPU"


def test_generation_stages_parts_run_once_before_the_ranks(run_copy):
    """alignment_rl and distill under torchrun: their generation (the 'before' answers, the teacher's traces)
    runs once in the launching process (prepare), the ranks train, rank 0 alone writes the dataset and
    measures the held-out preference."""
    ov = overrides_for(run_copy, *TORCHRUN, "eval.after_stage=false")
    runner.run_all(config.load(ov), ov, start="alignment_rl", force=True)
    align, distill = _manifest(run_copy, "alignment_rl"), _manifest(run_copy, "distill")
    for m in (align, distill):
        assert m["launch"]["world_size"] == 2 and len({r["pid"] for r in m["launch"]["ranks"]}) == 2
    assert "helpfulness" in align["metrics"]["heldout_preference"]
    assert (run_copy / "alignment_rl" / "general_before.json").exists()
    assert distill["metrics"]["traces"]["rows"] > 0
    import datasets

    rows = datasets.Dataset.from_parquet(str(run_copy / "distill" / "data" / "train.parquet"))
    assert len(rows) == distill["metrics"]["traces"]["rows"]  # written once, whole


def test_a_rank_closes_its_process_groups_after_a_success_only(tmp_path, monkeypatch):
    """A rank left to exit with its gloo group open can abort after the stage succeeded (SIGABRT, "terminate
    called without an active exception"), which failed CI once: the worker destroys the groups on success, and
    leaves them after an error, when other ranks may still be inside a collective."""
    import types

    import torch
    import torch.distributed as dist

    from r1pipe import stages, worker
    from r1pipe.context import StageContext

    (tmp_path / launch.CTX).write_text(json.dumps({"name": "cold_sft", "world_size": 1, "launcher": "torchrun"}))
    monkeypatch.setattr(StageContext, "from_json", classmethod(lambda cls, spec: types.SimpleNamespace(
        name=spec["name"], result=lambda metrics: {"metrics": metrics})))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")

    def run(fail):
        def stage_run(ctx):
            store = dist.FileStore(str(tmp_path / f"store-{fail}"), 1)
            dist.init_process_group("gloo", store=store, rank=0, world_size=1)
            ones = torch.ones(1)
            dist.all_reduce(ones)  # the group really carries a collective
            assert ones.item() == 1.0
            if fail:
                raise R1Error("the stage failed")
            return {"ok": 1}
        monkeypatch.setattr(stages, "module", lambda name: types.SimpleNamespace(run=stage_run))
        return worker.main([str(tmp_path)])

    assert run(fail=False) == 0 and not dist.is_initialized()
    assert json.loads((tmp_path / launch.RESULT).read_text()) == {"metrics": {"ok": 1}}
    try:
        assert run(fail=True) == 1 and dist.is_initialized()
        assert "the stage failed" in json.loads((tmp_path / "error-rank-0.json").read_text())["message"]
    finally:
        dist.destroy_process_group()
