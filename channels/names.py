"""Which file names a channel may take: one rule for every channel.

A name is *temporary* while an upload is in progress (dotfiles, `*.part`, `*.filepart`, `*.tmp`,
`*~`): it counts only once renamed. A name is *reserved* when it starts with `receipt_` or
`result_`: returnsd writes those back itself and never ingests them. A name is *supported* when
the parsers read its extension (the parsers' list is the only list).
"""

from __future__ import annotations

from ingest.names import SUPPORTED_SUFFIXES, is_reserved_name, is_supported_name

TEMP_SUFFIXES = (".part", ".filepart", ".tmp", "~")

__all__ = [
    "SUPPORTED_SUFFIXES",
    "TEMP_SUFFIXES",
    "is_reserved_name",
    "is_supported_name",
    "is_temp_name",
    "supported_list",
]


def is_temp_name(name: str) -> bool:
    """True for in-progress upload names: dotfiles, *.part, *.filepart, *.tmp, *~."""
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES)


def supported_list() -> str:
    """The supported extensions for a message to a sender, e.g. `.csv .txt .xml …`."""
    return " ".join(SUPPORTED_SUFFIXES)
