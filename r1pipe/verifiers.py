"""Verifiers: whether a completion's answer is right, by name. GRPO's accuracy reward, rejection sampling,
distillation traces and evaluation all look verifiers up here, so a task checks answers the same way in every
stage.

    integer   exact match of the <answer> value as a whole number ("05" = "5", "1,000" = "1000")
    math      math-verify's equivalence (\\frac12 = 0.5), a final \\boxed{} counting when there is no <answer>
    code      the reply's final code block, run with the row's tests in a sandbox (r1pipe/sandbox.py)
    pkg.mod:fn  yours: fn(completion: str, gold: str) -> bool, imported from your code

`gold` is the row's `answer` column: the answer for integer and math, the test code (asserts, or HumanEval's
`check(...)`) for code. A code reply passes when its program and the tests together exit 0.

Code runs in other processes, never in the trainer's. `configure()` sets how (the config's `sandbox:` block,
which the runner puts into every stage that runs code, so the limits are part of its fingerprint); checking a
batch runs its programs in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from r1pipe import answers, sandbox
from r1pipe.answers import final_code
from r1pipe.errors import R1Error

BUILTIN = ("integer", "math", "code")


def program(code: str, tests: str) -> str:
    """The program a code check runs: the reply's code, then the row's tests (asserts run at import)."""
    return f"{code}\n\n{tests}\n"


# -- the sandbox settings this process runs code with ------------------------------------------------------

# the limits' defaults are sandbox.Limits' own; mode and workers say how programs run, not within what
SANDBOX_DEFAULTS: dict[str, Any] = {"mode": "bwrap", **{f.name: f.default for f in fields(sandbox.Limits)},
                                    "workers": None}
_settings: dict[str, Any] = dict(SANDBOX_DEFAULTS)


def check_sandbox(settings: Any, where: str = "sandbox") -> dict[str, Any]:
    """The sandbox block, checked (one line per mistake), with defaults for what it leaves out."""
    if settings is None:
        return dict(SANDBOX_DEFAULTS)
    if not isinstance(settings, dict):
        raise R1Error(f"{where} must be a mapping, got {settings!r}", hint="e.g. sandbox.wall_seconds=10")
    unknown = sorted(set(settings) - set(SANDBOX_DEFAULTS))
    if unknown:
        raise R1Error(f"{where} has no setting {unknown[0]!r}", hint=f"settings: {', '.join(SANDBOX_DEFAULTS)}")
    out = {**SANDBOX_DEFAULTS, **settings}
    if out["mode"] not in sandbox.MODES:
        raise R1Error(f"{where}.mode must be one of {', '.join(sandbox.MODES)}, got {out['mode']!r}",
                      hint="bwrap runs programs in a sandbox; none runs them unsandboxed (only code you trust)")
    for key, value in out.items():
        if key == "mode" or (key == "workers" and value is None):
            continue
        whole = key == "workers" or isinstance(SANDBOX_DEFAULTS[key], int)
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value <= 0:
            raise R1Error(f"{where}.{key} must be a {'whole ' if whole else ''}number > 0, got {value!r}")
    return out


def configure(settings: dict[str, Any] | None) -> None:
    """Run this process's code checks with these sandbox settings (the config's `sandbox:` block)."""
    global _settings
    _settings = check_sandbox(settings)


def settings() -> dict[str, Any]:
    """The sandbox settings this process runs code with (a copy)."""
    return dict(_settings)


def limits() -> sandbox.Limits:
    return sandbox.Limits(**{k: v for k, v in _settings.items() if k not in ("mode", "workers")})


def run_code(programs: list[str | None]) -> list[bool]:
    """Run each program (None: there was no code, which fails) in the sandbox, in parallel; True if it passed."""
    todo = [p for p in programs if p is not None]
    ran = sandbox.run_many(todo, limits(), mode=_settings["mode"], workers=_settings["workers"]) if todo else []
    outcomes = iter(ran)
    return [p is not None and next(outcomes).passed for p in programs]


def code(completion: str, gold: str) -> bool:
    """The code verifier: the reply's final code block passes the row's tests."""
    return verify_many([completion], [gold], "code")[0]


# -- the registry ------------------------------------------------------------------------------------------


def _integer(completion: str, gold: str) -> bool:
    return answers.matches(completion, gold, "integer")


def _math(completion: str, gold: str) -> bool:
    return answers.matches(completion, gold, "math")


REGISTRY: dict[str, Callable[[str, str], bool]] = {"integer": _integer, "math": _math, "code": code}


def check_name(name: Any, where: str = "verifier") -> str:
    """A verifier name that get() can resolve: one line before any model loads, not at the first reward."""
    get(name, where)
    return name


def user_function(spec: str, what: str, named: str, signature: str) -> Callable:
    """Your function named "package.module:function", imported: a verifier here, a reward in rewards.build.
    Messages: "cannot import {what}: ...", "{named} is not a function" (hint: its `signature`)."""
    import importlib

    module, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise R1Error(f"cannot import {what}: {e}", hint="is the module on PYTHONPATH?") from e
    if not callable(fn):
        raise R1Error(f"{named} is not a function", hint=signature)
    return fn


def get(name: Any, where: str = "verifier") -> Callable[[str, str], bool]:
    """The verifier called `name`: a built-in, or `package.module:function` from your code."""
    if not isinstance(name, str) or not name:
        raise R1Error(f"{where} must be a verifier name, got {name!r}",
                      hint=f"verifiers: {', '.join(BUILTIN)}, or package.module:function")
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" not in name:
        raise R1Error(f"{where}: unknown verifier {name!r}",
                      hint=f"verifiers: {', '.join(BUILTIN)}, or package.module:function")
    return user_function(name, f"verifier {name!r} ({where})", f"{where}: verifier {name!r}",
                         "fn(completion: str, gold: str) -> bool")


def runs_code(name: Any) -> bool:
    """Whether a verifier runs programs (and so needs the sandbox). Yours may: it gets the settings too."""
    return isinstance(name, str) and name not in ("integer", "math")


def verify_many(completions: list[str], golds: list[str], names: list[str] | str) -> list[bool]:
    """Each completion checked against its gold answer by its verifier; code replies run in parallel."""
    names = [names] * len(completions) if isinstance(names, str) else list(names)
    out: list[bool | None] = [None] * len(completions)
    code_rows = [i for i, n in enumerate(names) if n == "code"]
    if code_rows:
        progs = [_code_program(completions[i], golds[i]) for i in code_rows]
        for i, ok in zip(code_rows, run_code(progs)):
            out[i] = ok
    for i, (c, g, n) in enumerate(zip(completions, golds, names)):
        if out[i] is None:
            out[i] = bool(get(n)(c, g))
    return [bool(v) for v in out]


def verify_groups(groups: list[list[str]], golds: list, names: list[str] | str) -> list[list[bool]]:
    """verify_many over each row's group of completions (a prompt's k samples) against that row's gold answer
    and verifier, in one batch so code runs in parallel across rows; the verdicts come back grouped."""
    names = [names] * len(groups) if isinstance(names, str) else list(names)
    flat = verify_many([c for g in groups for c in g], [gold for g, gold in zip(groups, golds) for _ in g],
                       [n for g, n in zip(groups, names) for _ in g])
    out, i = [], 0
    for g in groups:
        out.append(flat[i : i + len(g)])
        i += len(g)
    return out


def _code_program(completion: str, tests) -> str | None:
    if isinstance(tests, list):  # a list of asserts, as a column may hold them: one per line
        tests = "\n".join(str(t) for t in tests)
    found = final_code(completion)
    # no tests is no check: a program with nothing to pass fails, as str(a list) would pass everything
    return program(found, tests) if found is not None and isinstance(tests, str) and tests.strip() else None
