"""Resolve ``model.weights``: a local path, a registry name (URL + cache + checksum), or 'untrained'.

Registry entries can be added by users with a YAML file named in $STREAMSEG_WEIGHTS_REGISTRY
(``name: {url: ..., sha256: ..., variant: b0, filename: ...}``). Downloads go to
$STREAMSEG_CACHE (default ~/.cache/streamseg/weights); an offline machine gets one clear error
that says where to put the file instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

log = logging.getLogger(__name__)

UNTRAINED = "untrained"
_RELEASE = "https://github.com/PINTO0309/human-instance-segmentation/releases/download/weights/"


@dataclass(frozen=True)
class WeightsEntry:
    url: str
    variant: str
    sha256: str | None = None
    filename: str | None = None
    kind: str = "onnx"  # onnx or torch


# Upstream's release publishes ONNX exports (names from its README); checksums unknown offline.
REGISTRY: dict[str, WeightsEntry] = {
    "upstream-b0-64x48-dil1": WeightsEntry(_RELEASE + "best_model_b0_64x48_0.8545_dil1.onnx", "b0"),
}


def load_user_registry() -> dict[str, WeightsEntry]:
    path = os.environ.get("STREAMSEG_WEIGHTS_REGISTRY")
    reg = dict(REGISTRY)
    if not path:
        return reg
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        for name, e in data.items():
            reg[str(name)] = WeightsEntry(url=str(e["url"]), variant=str(e.get("variant", "b0")),
                                          sha256=None if e.get("sha256") is None else str(e["sha256"]), filename=e.get("filename"),
                                          kind=str(e.get("kind", "torch")))
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: bad weights registry file ({e}); expected 'name: {{url: ..., sha256: ...}}'") from None
    return reg


def cache_root() -> Path:
    """$STREAMSEG_CACHE, else ~/.cache/streamseg: downloaded weights and compiled kernels live here."""
    return Path(os.environ.get("STREAMSEG_CACHE", Path.home() / ".cache" / "streamseg"))


def cache_dir() -> Path:
    return cache_root() / "weights"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(spec: str, timeout_s: float = 30.0) -> Path | None:
    """Local path for ``spec``; None for 'untrained'. Downloads registry entries once into the cache."""
    if spec == UNTRAINED:
        return None
    p = Path(spec).expanduser()
    if p.exists():
        return p
    reg = load_user_registry()
    if spec not in reg:
        raise CheckpointError(f"model.weights: '{spec}' is neither an existing file nor a registry name "
                              f"({', '.join(sorted(reg))}) nor 'untrained'")
    e = reg[spec]
    target = cache_dir() / (e.filename or e.url.rsplit("/", 1)[-1])
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        log.info("downloading weights %s from %s", spec, e.url)
        try:
            with urllib.request.urlopen(e.url, timeout=timeout_s) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
        except Exception as ex:  # noqa: BLE001 - network errors of every kind
            tmp.unlink(missing_ok=True)
            raise CheckpointError(
                f"model.weights: cannot download '{spec}' from {e.url} ({type(ex).__name__}: {ex}); "
                f"download it elsewhere and put it at {target}, or set model.weights to a local path") from None
        tmp.replace(target)
    if e.sha256 and sha256_of(target) != e.sha256.lower():
        raise CheckpointError(f"{target}: sha256 does not match registry entry '{spec}'; delete the file and retry")
    return target
