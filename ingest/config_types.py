"""The base of every config model: unknown keys rejected, and secrets read from files or env."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from ingest.errors import ConfigError

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Strict(BaseModel):
    """Base model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Strict):
    """A secret read from a file or an environment variable, never written in the config."""

    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of 'file' or 'env'")
        return self

    def reveal(self) -> str:
        """Return the secret's value (stripped of surrounding whitespace)."""
        if self.file is not None:
            try:
                return self.file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from exc
        value = os.environ.get(self.env or "")
        if value is None:
            raise ConfigError(f"environment variable {self.env} is not set")
        return value.strip()

    def problem(self) -> str | None:
        """Say why the secret cannot be read, or None when it can."""
        try:
            self.reveal()
        except ConfigError as exc:
            return str(exc)
        return None

    def __repr__(self) -> str:
        return f"Secret(file={self.file!r}, env={self.env!r})"
