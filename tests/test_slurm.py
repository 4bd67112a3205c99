"""r1pipe slurm: the sbatch script for one stage, built from config alone (no Slurm, no torch, no training)."""

import shlex
import subprocess
import sys

import pytest

from r1pipe import config, launch, slurm
from r1pipe.errors import R1Error

FOUR_NODES = ("slurm.nodes=4", "slurm.partition=gpu", "slurm.gpus_per_node=8")
R1PIPE = [sys.executable, "-m", "r1pipe.cli"]


def _job(tmp_path, stage="reasoning_rl", *extra):
    ov = ["conf=tiny", f"run.dir={tmp_path}/run", *extra]
    return slurm.script(config.load(ov), stage, ov), ov


def _training_argv(text):
    """The training srun line as argv, and the command each node runs as argv."""
    line = next(l for l in text.splitlines() if l.startswith("srun ") and "bash -c" in l)
    argv = shlex.split(line)
    return argv, shlex.split(argv[argv.index("-c") + 1])


def test_four_node_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, ov = _job(tmp_path, "reasoning_rl", *FOUR_NODES)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for want in ("--job-name=r1pipe-reasoning_rl", "--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8",
                 f"--output={tmp_path}/run/slurm/%x-%j.out", "--time=24:00:00", "--partition=gpu"):
        assert f"#SBATCH {want}" in lines
    assert f"cd {tmp_path}" in text
    assert sum(1 for l in lines if l.startswith("srun ")) == 1  # no vLLM server: one step
    argv, cmd = _training_argv(text)
    assert "--nodes=4" in argv and "--ntasks=4" in argv
    # the Python that wrote the script: a compute node's PATH may have no r1pipe
    assert cmd[:6] == [*R1PIPE, "run", "--stage", "reasoning_rl"] and cmd[6:6 + len(ov)] == ov
    for want in ("launcher=torchrun", "launcher.nnodes=4", "launcher.node_rank=$SLURM_PROCID",
                 "launcher.rdzv_endpoint=$HEAD:29500", "launcher.nproc=8"):
        assert want in cmd
    assert "vllm-serve" not in text and "HF_HUB_OFFLINE" not in text
    assert " ".join([shlex.quote(sys.executable), "-m r1pipe.cli status", *map(shlex.quote, ov)]) in text


def test_written_script_is_valid_bash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for stage, extra in (("cold_sft", ()), ("reasoning_rl", ("slurm.vllm_server.enabled=true", "slurm.nodes=2"))):
        ov = ["conf=tiny", f"run.dir={tmp_path}/run", "slurm.setup=[module load cuda]", *extra]
        path = slurm.write(config.load(ov), stage, ov)
        assert path == tmp_path / "run" / "slurm" / f"{stage}.sbatch"
        assert path.stat().st_mode & 0o777 == 0o755
        subprocess.run(["bash", "-n", str(path)], check=True)
    assert not list(path.parent.glob(".*.tmp"))


def test_vllm_server_takes_an_extra_node(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, _ = _job(tmp_path, "reasoning_rl", *FOUR_NODES, "slurm.vllm_server.enabled=true",
                   "slurm.vllm_server.gpus=4", "slurm.vllm_server.extra_args=--max-model-len 4096")
    assert "#SBATCH --nodes=5" in text.splitlines()
    serve = next(l for l in text.splitlines() if "-m trl.cli.main vllm-serve" in l)
    assert serve.startswith('srun --nodes=1 --ntasks=1 -w "$VLLM_HOST"') and serve.endswith(" &")
    assert f"--model {tmp_path}/run/cold_sft/model" in serve  # reasoning_rl starts from cold_sft in conf=tiny
    assert "--tensor-parallel-size 4 --port 8000 --max-model-len 4096" in serve
    assert 'curl -sf "http://$VLLM_HOST:8000/health"' in text and "trap " in text
    argv, cmd = _training_argv(text)
    assert "--ntasks=4" in argv
    for want in ("use_vllm=true", "vllm_mode=server", "vllm_server_host=$VLLM_HOST", "vllm_server_port=8000"):
        assert f"++reasoning_rl.trainer.{want}" in cmd


def test_vllm_server_keys_are_grpo_fields():
    trl = pytest.importorskip("trl")  # TRL is installed with r1pipe; skip rather than fail where it is not
    import dataclasses

    fields = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    assert {"use_vllm", "vllm_mode", "vllm_server_host", "vllm_server_port"} <= fields


def test_training_command_composes(tmp_path, monkeypatch):
    """What each node runs is a valid r1pipe config: every key it sets exists."""
    monkeypatch.chdir(tmp_path)
    text, _ = _job(tmp_path, "reasoning_rl", *FOUR_NODES, "reasoning_rl.trainer.learning_rate=1e-5",
                   "slurm.vllm_server.enabled=true")
    _, cmd = _training_argv(text)
    expand = {"$SLURM_PROCID": "1", "$HEAD": "h0", "$VLLM_HOST": "h9"}
    ov = cmd[len(R1PIPE) + 3:]  # after `python -m r1pipe.cli run --stage reasoning_rl`
    for var, value in expand.items():
        ov = [o.replace(var, value) for o in ov]
    cfg = config.load(ov)
    spec = launch.spec(cfg)
    assert (spec["name"], spec["nnodes"], spec["node_rank"], spec["rdzv_endpoint"]) == ("torchrun", 4, 1, "h0:29500")
    launch.check(spec)
    assert launch.is_follower(spec)
    trainer = cfg.reasoning_rl.trainer
    assert (trainer.use_vllm, trainer.vllm_mode, trainer.vllm_server_host, trainer.vllm_server_port) == (
        True, "server", "h9", 8000)


def test_a_chosen_launcher_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, _ = _job(tmp_path, "cold_sft", "launcher=accelerate")
    _, cmd = _training_argv(text)
    assert "launcher=accelerate" in cmd and "launcher=torchrun" not in cmd


def test_vllm_server_only_for_grpo_stages(tmp_path):
    with pytest.raises(R1Error, match="cold_sft does not use them") as e:
        _job(tmp_path, "cold_sft", "slurm.vllm_server.enabled=true")
    assert "reasoning_rl" in e.value.hint
    with pytest.raises(R1Error, match="vllm_server.gpus"):
        _job(tmp_path, "alignment_rl", "slurm.vllm_server.enabled=true", "slurm.vllm_server.gpus=16")


@pytest.mark.parametrize("bad", ["slurm.nodes=0", "slurm.gpus_per_node=0", "slurm.nodes=two"])
def test_bad_sizes_raise(tmp_path, bad):
    with pytest.raises(R1Error, match=bad.split("=")[0]):
        _job(tmp_path, "cold_sft", bad)


def test_unknown_stage_raises_and_writes_nothing(tmp_path):
    ov = ["conf=tiny", f"run.dir={tmp_path}/run"]
    with pytest.raises(R1Error, match="unknown stage"):
        slurm.write(config.load(ov), "cold_sfft", ov)
    assert not (tmp_path / "run").exists()


def test_optional_sbatch_lines_only_when_set(tmp_path):
    optional = ("--partition", "--account", "--qos", "--cpus-per-task", "--mem")
    text, _ = _job(tmp_path, "cold_sft")
    assert not [l for l in text.splitlines() if l.startswith("#SBATCH") and l.split("=")[0][8:] in optional]
    text, _ = _job(tmp_path, "cold_sft", "slurm.partition=gpu", "slurm.account=proj", "slurm.qos=high",
                   "slurm.cpus_per_task=64", "slurm.mem=500G", "slurm.job_name=mine", "slurm.output=/logs/%j.out")
    lines = text.splitlines()
    for want in ("--partition=gpu", "--account=proj", "--qos=high", "--cpus-per-task=64", "--mem=500G",
                 "--job-name=mine", "--output=/logs/%j.out"):
        assert f"#SBATCH {want}" in lines


def test_awkward_override_survives_quoting(tmp_path):
    cfg = config.load(["conf=tiny", f"run.dir={tmp_path}/run"])
    awkward = "+note=it's a \"test\" with $HOME"
    text = slurm.script(cfg, "cold_sft", ["conf=tiny", awkward])
    _, cmd = _training_argv(text)
    assert cmd[len(R1PIPE) + 3:][:2] == ["conf=tiny", awkward]


FAKES = {  # just enough Slurm, Python (r1pipe, TRL) and curl to run the script here and see what each node ran
    "scontrol": 'printf "h0\\nh1\\nh2\\n"',
    "curl": "exit 0",
    "python": ('[[ $2 == trl.cli.main ]] && { echo "trl ${*:3}" >> "$LOG"; exec sleep 30; }\n'
               'echo "r1pipe ${*:3} [on $SLURM_PROCID]" >> "$LOG"'),
    "srun": ('while [[ $1 == -* ]]; do [[ $1 == -w ]] && { hosts=$2; shift; }; shift; done\n'
             'IFS=, read -ra H <<< "$hosts"\n'
             '(( ${#H[@]} == 1 )) && SLURM_PROCID=0 exec "$@"\n'
             'for i in "${!H[@]}"; do SLURM_PROCID=$i "$@"; done'),
}


def test_script_runs_under_fake_slurm(tmp_path, monkeypatch):
    """Run the script with stand-ins for srun & co: each node gets its own rank, the batch script's hosts."""
    monkeypatch.chdir(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    ov = ["conf=tiny", f"run.dir={tmp_path}/run", "slurm.nodes=2", "slurm.vllm_server.enabled=true",
          "slurm.setup=[touch setup-ran]"]
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))  # the script runs the Python that wrote it
    path = slurm.write(config.load(ov), "reasoning_rl", ov)
    log = tmp_path / "log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "SLURM_JOB_NODELIST": "h[0-2]"}
    subprocess.run(["bash", str(path)], env=env, cwd="/", check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert lines[0].startswith(f"trl vllm-serve --model {tmp_path}/run/cold_sft/model")
    runs = [l for l in lines if l.startswith("r1pipe run")]
    assert [r.rsplit(" ", 1)[1] for r in runs] == ["0]", "1]"]
    for rank, r in enumerate(runs):
        assert f"launcher.node_rank={rank} " in r and "launcher.rdzv_endpoint=h0:29500" in r
        assert "vllm_server_host=h2" in r
    assert lines[-1].startswith("r1pipe status conf=tiny")
    assert (tmp_path / "setup-ran").is_file()  # setup ran after the cd


def test_gpus_follow_the_presets_world_size(tmp_path):
    """A CPU preset asks for one GPU per node, not 8; a preset set for 8 processes asks for 8 over the nodes."""
    text, _ = _job(tmp_path, "cold_sft")
    assert "#SBATCH --gpus-per-node=1" in text.splitlines() and "launcher.nproc=1" in text
    ov = ["conf=qwen2.5-1.5b", f"run.dir={tmp_path}/run", "slurm.nodes=2"]
    text = slurm.script(config.load(ov), "cold_sft", ov)
    assert "#SBATCH --gpus-per-node=4" in text.splitlines() and "launcher.nproc=4" in text


def test_world_size_spread_unevenly_over_nodes_is_said(tmp_path, caplog):
    ov = ["conf=qwen2.5-1.5b", f"run.dir={tmp_path}/run", "slurm.nodes=3"]
    text = slurm.script(config.load(ov), "cold_sft", ov)
    assert "#SBATCH --gpus-per-node=3" in text.splitlines()
    assert "run.world_size=8 over 3 nodes is 3 GPUs per node, 9 processes in all" in caplog.text
