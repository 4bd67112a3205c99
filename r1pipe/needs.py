"""What only the target machine can provide, noted while `run-all --dry-run` checks configs elsewhere.

In a real run the checks that consult this raise as usual; under `checking_elsewhere()` (preflight's dry run)
a GPU, vLLM or DeepSpeed this machine lacks is listed as a need instead. Its own module so that launch and
training can ask without importing the dry run (which imports them).
"""

from __future__ import annotations

import contextlib
import importlib.util

_NEEDS: dict[str, list[str]] | None = None  # what -> [where]; set while a --dry-run checks


def elsewhere() -> bool:
    """Whether configs are being checked for another machine (--dry-run) rather than run here."""
    return _NEEDS is not None


def defer(what: str, where: str) -> bool:
    """Note that the target machine must provide `what` (for `where`); False when not in a --dry-run, where the
    caller raises as usual."""
    if _NEEDS is None:
        return False
    _NEEDS.setdefault(what, []).append(where)
    return True


def missing(package: str, where: str, extra: str | None = None, install: str | None = None) -> bool:
    """A package the run needs and this machine lacks: True (raise) in a real run, noted in a --dry-run.
    `extra`: r1pipe's optional dependency that installs it (default: the package's name); `install`: the
    command instead, for a package no extra names."""
    if importlib.util.find_spec(package) is not None:
        return False
    return not defer(f"{package} ({install or f'pip install {chr(39)}r1pipe[{extra or package}]{chr(39)}'})", where)


@contextlib.contextmanager
def checking_elsewhere():
    global _NEEDS
    _NEEDS = needs = {}
    try:
        yield needs
    finally:
        _NEEDS = None
