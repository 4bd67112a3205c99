"""Recompute each stage's eval.json from its eval_samples.jsonl with code that shares nothing with r1pipe.

For integer-answer benchmarks (the tiny task). Exits 1 if any number differs.

    python scripts/recompute_eval.py runs/tiny
"""

import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
INTEGER = re.compile(r"[+-]?\d+")


def answer(text: str) -> int | None:
    """The last answer block after the reasoning, as an integer; thousands commas and spaces are allowed."""
    found = ANSWER.findall(text.split("</think>")[-1])
    digits = found[-1].replace(",", "").replace(" ", "").strip() if found else ""
    return int(digits) if INTEGER.fullmatch(digits) else None


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def se(xs: list[float]) -> float:
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def main(run: Path) -> int:
    bad = 0
    for ev_path in sorted(run.glob("*/eval.json")):
        stage = ev_path.parent
        ev = json.loads(ev_path.read_text())
        rows = [json.loads(line) for line in (stage / "eval_samples.jsonl").read_text().splitlines() if line]
        if ev.get("settings", {}).get("verifier", "integer") != "integer":
            print(f"{stage.name:14s} skipped: not an integer-answer benchmark")
            continue
        gold = [int(r["answer"]) for r in rows]
        checks = {}
        if rows[0].get("greedy") is not None:
            greedy = [float(answer(r["greedy"]) == g) for r, g in zip(rows, gold)]
            checks["greedy"] = (mean(greedy), ev["greedy_accuracy"])
            checks["greedy_se"] = (se(greedy), ev["greedy_accuracy_se"])
        k = len(rows[0]["samples"])
        if k:
            pass1 = [sum(answer(c) == g for c in r["samples"]) / k for r, g in zip(rows, gold)]
            cons = []
            for r, g in zip(rows, gold):
                votes = Counter(a for a in map(answer, r["samples"]) if a is not None)
                cons.append(float(bool(votes) and votes.most_common(1)[0][0] == g))
            checks["pass@1"] = (mean(pass1), ev["pass@1"])
            checks[f"cons@{k}"] = (mean(cons), ev[f"cons@{k}"])
        wrong = [name for name, (mine, theirs) in checks.items() if abs(mine - theirs) > 1e-12]
        bad += bool(wrong)
        summary = " ".join(f"{name} {mine:.4f}" for name, (mine, _) in checks.items() if not name.endswith("_se"))
        print(f"{stage.name:14s} {summary}  {'MISMATCH: ' + ', '.join(wrong) if wrong else 'match'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny")))
