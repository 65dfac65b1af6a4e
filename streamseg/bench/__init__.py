"""Benchmarks: ``streamseg bench {model,pipeline,live} [options]`` (each kind has its own argparse)."""

from __future__ import annotations

import argparse
import importlib

from ..errors import UserError

KINDS = ("model", "pipeline", "live")


def bench_main(args: argparse.Namespace) -> int:
    """Dispatch to ``streamseg.bench.<kind>.main(rest)``; the kind module is imported lazily."""
    rest = list(getattr(args, "rest", None) or [])
    kind = getattr(args, "kind", None) or getattr(args, "mode", None)
    if rest and rest[0] in KINDS and (kind is None or rest[0] == kind):
        kind = rest.pop(0)
    if kind not in KINDS:
        raise UserError(
            f"bench: unknown kind {kind!r}; allowed: {', '.join(KINDS)} (e.g. streamseg bench model --quick)"
        )
    mod = importlib.import_module(f"{__name__}.{kind}")
    return int(mod.main(rest) or 0)
