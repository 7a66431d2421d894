"""pytest plugin: collect every plain secret the test session uses and fail it if one was logged.

Registered from tests/conftest.py. For the whole session it

- wraps `ingest.passwords.hash_password` (every FTP password, API token and SMTP AUTH password the
  tests make is hashed through it) and `ingest.config.Secret.reveal` (pull passwords and keys, relay
  passwords, file/env tokens) and keeps the plain values they see; a revealed private key gives its
  base64 body. Private keys the tests write under pytest's base temp folder (TLS keys, ssh keys)
  are collected at the end. `register_secret` adds anything else;
- keeps one line per log record of every logger, at DEBUG (the root logger is set to DEBUG), in a
  nameless temporary file, plus the captured stdout/stderr of every test and any text handed to
  `scan_text` (child processes' output);
- at the end searches every kept line for every secret of at least `MIN_LENGTH` characters and
  for its base64 forms (SMTP AUTH), except a few placeholders that are ordinary words
  (`TOO_COMMON`); prints the offending lines masked and sets the exit status to 1 if any is
  found; and prints `secrets-scan: N secrets, M log lines, K leaks (…)`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest

MIN_LENGTH = 6
# Placeholders some tests use as secrets that are also ordinary protocol and file-name text
# ("331 Username ok, send password.", "secret.txt"): a match could not be told from a leak.
TOO_COMMON = frozenset({"password", "passwd", "secret", "secrets", "changeme"})
MIN_B64 = 8
KEY_FILE_MAX_BYTES = 64 * 1024
SHOWN = 50
PEM_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----\s*(.*?)-----END \1-----", re.DOTALL)
BASE64_LINE = re.compile(r"^[A-Za-z0-9+/=]{16,}$")


@dataclass(frozen=True)
class Leak:
    """A captured line holding a secret: where it came from, and the line with secrets masked."""

    source: str
    masked: str


class _State:
    """What the plugin collects during one session."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.lock = threading.Lock()
        self.log_lines = 0
        self.other_lines = 0
        self.root_level = logging.WARNING
        self.config: pytest.Config | None = None
        self.summary: list[str] = []
        self.file: TextIO | None = None
        self.handler: _LineHandler | None = None
        self.undo: list[Callable[[], None]] = []


_state = _State()


def register_secret(value: str) -> None:
    """Add a plain secret (and, for a private key, its base64 body) to the set searched for."""
    if not isinstance(value, str) or not value:
        return
    found = list(key_material(value))
    with _state.lock:
        _state.secrets.add(value.strip())
        _state.secrets.update(found)


def collected_secrets() -> frozenset[str]:
    """The plain secrets collected so far (for tests that check the plugin itself)."""
    with _state.lock:
        return frozenset(_state.secrets)


def counts() -> tuple[int, int]:
    """Lines kept so far: (log lines, lines of test and child-process output)."""
    with _state.lock:
        return _state.log_lines, _state.other_lines


def scan_text(text: str | bytes, source: str = "text") -> None:
    """Hand text to the scan (a child process's stderr, a log file): searched at session end."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for line in text.splitlines():
        _keep(source, line)


def key_material(text: str) -> Iterator[str]:
    """The base64 body of every PEM/OpenSSH private key in `text`: joined, and line by line.

    The first body line is skipped on its own: for OpenSSH and PKCS#8 keys it is mostly a fixed
    header and public data, which may appear in logs legitimately.
    """
    for match in PEM_KEY.finditer(text):
        lines = [ln.strip() for ln in match.group(2).splitlines()]
        body = [ln for ln in lines if BASE64_LINE.match(ln)]
        if body:
            yield "".join(body)
            yield from body[1:]


def find_leaks(lines: Iterable[tuple[str, str]], secrets: Iterable[str]) -> list[Leak]:
    """Every (source, line) whose line holds a secret of at least MIN_LENGTH characters, masked."""
    text = "".join(f"{source}\t{line}\n" for source, line in lines)
    return _search(text, _wanted(secrets))


def _wanted(secrets: Iterable[str]) -> list[tuple[str, str]]:
    """(needle, mask) for every secret long enough and its base64 forms, longest first."""
    plain = {s for s in secrets if len(s) >= MIN_LENGTH and s.lower() not in TOO_COMMON}
    needles = {s: f"<secret: {len(s)} chars>" for s in plain}
    for s in plain:
        for form in base64_forms(s):
            needles.setdefault(form, f"<secret in base64: {len(s)} chars>")
    return sorted(needles.items(), key=lambda item: len(item[0]), reverse=True)


def base64_forms(secret: str) -> set[str]:
    """The base64 text a secret always produces wherever it sits in an encoded stream.

    AUTH PLAIN and AUTH LOGIN send credentials in base64, so a logged SMTP command line leaks
    the password without holding it in clear. For each of the three alignments, only the
    characters made of the secret's own bits are kept (at least MIN_B64 of them).
    """
    raw = secret.encode()
    forms = set()
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + raw).decode()
        first = -(-8 * k // 6)
        last = (8 * (k + len(raw))) // 6
        form = encoded[first:last]
        if len(form) >= MIN_B64:
            forms.add(form)
    return forms


def _search(text: str, wanted: list[tuple[str, str]]) -> list[Leak]:
    """Leaks in `text` (lines `source<TAB>line`); a secret inside a source never counts."""
    hits: dict[int, list[int]] = {}
    for i, (needle, _) in enumerate(wanted):
        pos = text.find(needle)
        while pos != -1:
            start = text.rfind("\n", 0, pos) + 1
            end = text.find("\n", pos)
            end = len(text) if end == -1 else end
            tab = text.find("\t", start, end)
            if tab != -1 and tab < pos:
                hits.setdefault(start, []).append(i)
            pos = text.find(needle, end)
    leaks = []
    for start in sorted(hits):
        end = text.find("\n", start)
        source, _, masked = text[start : len(text) if end == -1 else end].partition("\t")
        for i in hits[start]:
            masked = masked.replace(*wanted[i])
        leaks.append(Leak(source, masked))
    return leaks


# --- capture


class _LineHandler(logging.Handler):
    """Writes one line per log record (message, and traceback if any) to the capture file."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's text: `logger LEVEL message` (newlines kept as separate lines)."""
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format must not hide the values it carries
            text = f"{record.msg!r} % {record.args!r}"
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + record.stack_info
        for line in text.splitlines() or [""]:
            _keep(f"log {record.name} {record.levelname}", line, log=True)


def _keep(source: str, line: str, log: bool = False) -> None:
    out = _state.file
    if out is None:
        return
    with _state.lock:
        out.write(f"{source}\t{line.replace(chr(13), ' ')}\n")
        if log:
            _state.log_lines += 1
        else:
            _state.other_lines += 1


def _scan_kept(wanted: list[tuple[str, str]], chunk_chars: int = 32 * 1024 * 1024) -> list[Leak]:
    """Search the capture file, a chunk of whole lines at a time."""
    out = _state.file
    if out is None:
        return []
    leaks: list[Leak] = []
    with _state.lock:
        out.flush()
        end = out.tell()
        out.seek(0)
        rest = ""
        while True:
            chunk = out.read(chunk_chars)
            if not chunk:
                break
            text = rest + chunk
            cut = text.rfind("\n") + 1
            rest = text[cut:]
            leaks += _search(text[:cut], wanted)
        if rest:
            leaks += _search(rest, wanted)
        out.seek(end)
    return leaks


def _attach_handler() -> None:
    """Root at DEBUG with our handler; also on loggers that do not propagate."""
    handler = _state.handler
    if handler is None:
        return
    root = logging.getLogger()
    if handler not in root.handlers:
        root.addHandler(handler)
    if root.level != logging.DEBUG:
        root.setLevel(logging.DEBUG)
    for logger in list(logging.root.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger) or logger.propagate:
            continue
        if handler not in logger.handlers:
            logger.addHandler(handler)


# --- patching


def _patch(owner: Any, name: str, wrapper: Callable[[Any], Any]) -> None:
    original = getattr(owner, name)
    patched = wrapper(original)
    setattr(owner, name, patched)
    _state.undo.append(lambda: setattr(owner, name, original))
    if isinstance(owner, type):
        return
    for module in list(sys.modules.values()):  # `from ingest.passwords import hash_password`
        if module is not owner and getattr(module, name, None) is original:
            setattr(module, name, patched)
            _state.undo.append(functools.partial(setattr, module, name, original))


def _recording(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def hash_password(password: str) -> str:
        register_secret(password)
        return original(password)

    return hash_password


def _recording_reveal(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def reveal(self: Any) -> str:
        value = original(self)
        register_secret(value)
        return value

    return reveal


def _collect_written_keys(base: Path) -> int:
    """Register the private keys (PEM/OpenSSH) the tests wrote under `base`; return how many."""
    found = 0
    for folder, _, names in os.walk(base):
        for name in names:
            path = os.path.join(folder, name)
            try:
                if os.path.islink(path) or os.path.getsize(path) > KEY_FILE_MAX_BYTES:
                    continue
                with open(path, "rb") as f:
                    head = f.read(KEY_FILE_MAX_BYTES)
            except OSError:
                continue
            if b"PRIVATE KEY-----" in head:
                text = head.decode("ascii", "replace")
                for body in key_material(text):
                    with _state.lock:
                        _state.secrets.add(body)
                found += 1
    return found


# --- hooks


def pytest_configure(config: pytest.Config) -> None:
    """Patch the secret sources, open the capture file, add the root handler at DEBUG."""
    if _state.config is not None:  # an in-process inner session shares the outer capture
        return
    from ingest import config as config_module
    from ingest import passwords

    _state.config = config
    _patch(passwords, "hash_password", _recording)
    _patch(config_module.Secret, "reveal", _recording_reveal)
    # No name on disk: nothing is left behind, even when the session is killed.
    _state.file = tempfile.TemporaryFile(  # noqa: SIM115 - closed in pytest_unconfigure
        "w+", encoding="utf-8", errors="backslashreplace", prefix="returnsd-secrets-scan-"
    )
    _state.handler = _LineHandler()
    _state.root_level = logging.getLogger().level
    _attach_handler()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Put the handler and the DEBUG level back if a test's code changed the logging setup."""
    _attach_handler()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep what each test wrote to stdout/stderr (child processes sharing the fds included)."""
    for title, content in report.sections:
        if title.startswith(("Captured stdout", "Captured stderr")):
            scan_text(content, f"{report.nodeid} {title}")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Search every kept line for every secret; fail the session on a leak; print the summary."""
    if _state.file is None or session.config is not _state.config:
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        with contextlib.suppress(OSError):
            _collect_written_keys(factory.getbasetemp())
    secrets = collected_secrets()
    wanted = _wanted(secrets)
    counted = sum(1 for s in secrets if len(s) >= MIN_LENGTH and s.lower() not in TOO_COMMON)
    common = sorted(s for s in secrets if s.lower() in TOO_COMMON)
    leaks = _scan_kept(wanted)
    _state.summary = [
        f"secrets-scan: LEAK in {leak.source}: {leak.masked}" for leak in leaks[:SHOWN]
    ]
    if len(leaks) > SHOWN:
        _state.summary.append(f"secrets-scan: … and {len(leaks) - SHOWN} more leaking lines")
    also = f"also {_state.other_lines} lines of test and child-process output"
    if common:
        also += f"; placeholders too common to search for: {', '.join(common)}"
    lines = f"{_state.log_lines} log lines"
    _state.summary.append(f"secrets-scan: {counted} secrets, {lines}, {len(leaks)} leaks ({also})")
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the leaks (masked) and the one-line summary at the end of the report."""
    for line in _state.summary:
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Undo the patches, remove the handler, delete the capture file."""
    if config is not _state.config:
        return
    while _state.undo:
        _state.undo.pop()()
    handler = _state.handler
    if handler is not None:
        for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
            if isinstance(logger, logging.Logger) and handler in logger.handlers:
                logger.removeHandler(handler)
    logging.getLogger().setLevel(_state.root_level)
    if _state.file is not None:
        _state.file.close()
    _state.file = _state.handler = _state.config = None
