"""What a received file may be called: the extensions the parsers read, the names returnsd reserves.

Channels ask here (they never import the parsers): the parsers' list of extensions is the only
list, and `receipt_`/`result_` names are returnsd's own replies, never ingested.
"""

from __future__ import annotations

from ingest.spool import is_reserved_name
from parsers.readers import SUPPORTED_SUFFIXES, is_supported_name

__all__ = ["SUPPORTED_SUFFIXES", "is_reserved_name", "is_supported_name"]
