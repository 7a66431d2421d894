"""One log line per file event, as key=value pairs an operator can grep; never a secret."""

from __future__ import annotations

import logging

log = logging.getLogger("returnsd.files")

FIELDS = ("file_id", "channel", "campaign", "sender", "peer", "name", "size", "seconds", "outcome")


def file_event(event: str, **fields: object) -> None:
    """Log a file event (received, duplicate, processed, failed, delivered, refused, …)."""
    parts = [f"event={event}"]
    for key in (*FIELDS, *sorted(k for k in fields if k not in FIELDS)):
        value = fields.get(key)
        if value is None:
            continue
        if isinstance(value, float):
            value = f"{value:.3f}"
        text = str(value)
        parts.append(f"{key}={_quote(text)}")
    log.info(" ".join(parts))


def _quote(text: str) -> str:
    if text and not any(c in text for c in ' "=\n\r\t'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
