"""Logging set-up for the CLI and the daemon: returnsd's own lines, little library chatter."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# The loggers of the libraries returnsd embeds; at INFO they repeat self-checks and job runs.
THIRD_PARTY = (
    "aiosmtpd",
    "mail.log",
    "apscheduler",
    "multipart",
    "python_multipart",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "pyftpdlib",
    "paramiko",
    "watchdog",
    "alembic",
    "asyncio",
)


def configure(level: str, third_party_level: str = "WARNING") -> None:
    """Log returnsd at `level` and the embedded libraries at `third_party_level`."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    logging.getLogger().setLevel(level.upper())
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(third_party_level.upper())
