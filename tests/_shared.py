"""The one place tests reach ../shared (fixtures, footage, RTSP tools); skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """Return the shared folder (env STREAMSEG_SHARED, else ../shared next to the repo)."""
    env = os.environ.get("STREAMSEG_SHARED")
    cands = [Path(env)] if env else []
    cands += [ROOT.parent / "shared", ROOT / "shared"]
    for c in cands:
        if c.is_dir():
            return c
    pytest.skip("shared material (../shared: fixtures, footage, RTSP tools) is not present next to the repo")


def shared_file(*parts: str) -> Path:
    """A file under shared/, skipping the test with the reason when it is missing."""
    p = shared_dir().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared file {p} is not present")
    return p
