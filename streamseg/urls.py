"""Credential redaction for URLs: every log line, metric and error that names a source or sink
goes through :func:`redact`, so ``rtsp://user:pass@cam/...`` never leaks a password."""

from __future__ import annotations

import re

__all__ = ["redact", "has_credentials"]

# scheme://userinfo@ . First choice: everything up to the LAST '@' before the first '/', so
# passwords holding an unescaped '@' are hidden whole. Fallback: "user:pass@" where an unescaped
# '/' sits in the password (the user part may not contain '/', so "http://host/a:b@c" is left).
_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^\s/?#]*@|[^\s@/:]+:[^\s@]*@)"
)


def redact(text_or_url: str) -> str:
    """Replace the ``user:password@`` part of every URL inside ``text_or_url`` with ``***:***@``.

    Works on a bare URL or on free text (an FFmpeg error message that quotes the URL).
    Text without credentials is returned unchanged.
    """
    if not text_or_url:
        return text_or_url
    return _USERINFO.sub(lambda m: m.group("scheme") + "***:***@", str(text_or_url))


def has_credentials(url: str) -> bool:
    """True when ``url`` carries a ``user[:password]@`` part."""
    return bool(_USERINFO.search(url or ""))
