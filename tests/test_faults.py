"""Fault injection on the smoke preset: SIGKILL run-all at random moments (scripts/fault_inject.py; CI runs
the same script with 20 kills on the tiny preset), and the invariants it checks can really fail."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import fault_inject  # noqa: E402


def test_random_kills_never_cost_finished_work(tmp_path):
    run_dir = tmp_path / "faults"
    rc = fault_inject.main(["--kills", "4", "--seed", "3", "--max-delay", "2", "--startup-share", "0.25",
                            "conf=smoke", f"run.dir={run_dir}", "eval.k=1"])
    summary = json.loads((run_dir / "faults.json").read_text())
    assert rc == 0, summary["failures"]
    assert sum(k["rc"] == "killed" for k in summary["kills"]) == 4
    assert all(not k["problems"] for k in summary["kills"])
    assert summary["final"]["rc"] == 0 and summary["again"]["rc"] == 0


def test_the_invariants_see_damage_and_a_child_of_unfinished_work(run_copy):
    assert fault_inject.check_invariants(run_copy) == []
    weights = run_copy / "cold_sft" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert fault_inject.check_invariants(run_copy) == ["cold_sft: output model does not match its recorded sha256"]
    (run_copy / "cold_sft" / "manifest.json").unlink()  # as if reasoning_rl had read an unfinished cold_sft
    assert "reasoning_rl is complete but its parent cold_sft is not" in fault_inject.check_invariants(run_copy)
    (run_copy / "second_sft" / "manifest.json").write_text('{"stage": "second_sft", "fin')
    assert any("torn manifest" in p for p in fault_inject.check_invariants(run_copy))
