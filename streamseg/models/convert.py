"""``streamseg convert``: any supported weights file -> streamseg's own checkpoint format."""

from __future__ import annotations

import logging

from .checkpoints import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def convert_main(src: str, dst: str, variant: str | None = None) -> int:
    model = load_checkpoint(src, name=variant)
    save_checkpoint(model, dst, extra={"converted_from": str(src), "source_kind": getattr(model, "checkpoint_kind", "?")})
    log.info("wrote %s (%s, roi %s, mask %s)", dst, model.spec.name, model.spec.roi_size, model.spec.mask_size)
    return 0
