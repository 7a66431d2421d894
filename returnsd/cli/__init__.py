"""The `returnsd` command line: run the daemon, ingest a file, inspect and change files and actions.

Conventions every command keeps: human tables with headers by default and `--json` for machines;
listings take `--limit N`/`--all` and say how many more there are; filters are validated (an
unknown campaign, status or state exits 2 naming the allowed values, case-insensitively); exit
codes 0 done, 1 failed, 2 usage or configuration; read-only commands never create a database.
"""

from returnsd.cli import actions, admin, files, nodes, tokens, users
from returnsd.cli.app import main

__all__ = ["actions", "admin", "files", "main", "nodes", "tokens", "users"]
