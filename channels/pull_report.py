"""What one scheduled pull did: files fetched (with ids), files left, errors; for logs and CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GROWING = "still growing"
ALREADY = "already fetched"
CHANGED = "changed during transfer"


@dataclass(frozen=True)
class Fetched:
    """One remote file handed to the spool: its name, returnsd file id, spool status and size."""

    name: str
    file_id: str
    status: str
    size: int


@dataclass
class PullReport:
    """The outcome of `PullChannel.pull(campaign)`; `ok` is False when anything went wrong."""

    campaign: str
    source: str
    attempts: int = 0
    fetched: list[Fetched] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # retried failures, after/receipt problems

    @property
    def ok(self) -> bool:
        """True when the run ended without an error (files may still have been left for later)."""
        return not self.errors

    def add(self, fetched: Fetched) -> None:
        """Note a fetched file (it is no longer 'skipped', e.g. after a retried session)."""
        self.fetched.append(fetched)
        self.skipped.pop(fetched.name, None)

    def skip(self, name: str, reason: str) -> None:
        """Note a file left on the server, unless an earlier attempt of this run fetched it."""
        if all(f.name != name for f in self.fetched):
            self.skipped[name] = reason

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form for `returnsd pull --json` and the logs."""
        return {
            "campaign": self.campaign,
            "source": self.source,
            "ok": self.ok,
            "attempts": self.attempts,
            "fetched": [vars(f) for f in self.fetched],
            "skipped": [{"name": n, "reason": r} for n, r in sorted(self.skipped.items())],
            "errors": list(self.errors),
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        lines = [
            f"pull {self.campaign} from {self.source}: {len(self.fetched)} fetched, "
            f"{len(self.skipped)} skipped, {len(self.errors)} error(s) ({tries})"
        ]
        lines += [
            f"  fetched  {f.name}  {f.file_id}  {f.status}  {f.size} bytes" for f in self.fetched
        ]
        lines += [f"  skipped  {n}  ({r})" for n, r in sorted(self.skipped.items())]
        lines += [f"  error    {e}" for e in self.errors]
        lines += [f"  note     {n}" for n in self.notes]
        return "\n".join(lines)
