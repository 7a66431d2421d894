"""The import direction between the packages: parsers ← ingest ← channels ← returnsd, enforced.

Every `import` and `from … import` in the product's code is read with `ast` (also those inside
functions, which import-time checks miss) and compared with the table below. A back-import — the
engine importing a channel, a parser importing the store, anything importing the composition
root — fails this test with the file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("parsers", "ingest", "channels", "console", "scheduler", "returnsd")

# Which top-level packages each package may import (besides itself and third-party code).
ALLOWED: dict[str, frozenset[str]] = {
    "parsers": frozenset(),
    "ingest": frozenset({"parsers"}),
    "channels": frozenset({"ingest"}),
    "console": frozenset({"ingest"}),
    "scheduler": frozenset({"ingest"}),
    "returnsd": frozenset({"parsers", "ingest", "channels", "console", "scheduler"}),
}
# Modules of an allowed package that a package still may not reach: a channel receives, spools and
# answers, and the console reads and calls the operation layer; neither parses, matches, plans or
# writes the ledger itself.
CHANGES_ONLY_THROUGH_OPERATIONS = (
    "ingest.engine",
    "ingest.bulk",
    "ingest.rules",
    "ingest.planning",
    "ingest.matching",
    "ingest.worker",
)
FORBIDDEN_MODULES: dict[str, tuple[str, ...]] = {
    "channels": (*CHANGES_ONLY_THROUGH_OPERATIONS, "ingest.store"),
    "console": CHANGES_ONLY_THROUGH_OPERATIONS,
}


@dataclass(frozen=True)
class Violation:
    """One import that breaks the layering."""

    path: str
    line: int
    imported: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.imported}"


def package_of(rel: Path) -> str | None:
    """The top-level package a product file belongs to, or None for tests, bench and fixtures."""
    first = rel.parts[0]
    if first.endswith(".py"):
        first = first[:-3]
    return first if first in PACKAGES else None


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Every absolute module name `source` imports, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if "." not in node.module:  # `from ingest import engine` reaches ingest.engine
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations_in(package: str, rel: str, source: str) -> list[Violation]:
    """The layering violations of one file of `package`."""
    out = []
    for line, module in imported_modules(source):
        target = module.split(".")[0]
        if target not in PACKAGES or target == package:
            continue
        banned = any(
            module == m or module.startswith(m + ".") for m in FORBIDDEN_MODULES.get(package, ())
        )
        if target not in ALLOWED[package] or banned:
            out.append(Violation(rel, line, module))
    return sorted(set(out), key=lambda v: (v.path, v.line, v.imported))


def violations(root: Path) -> list[Violation]:
    """Every layering violation in the product packages under `root`."""
    out: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        package = package_of(rel)
        if package is None or ".venv" in rel.parts:
            continue
        out += violations_in(package, str(rel), path.read_text(encoding="utf-8"))
    return out


def test_product_imports_follow_the_layers() -> None:
    found = violations(ROOT)
    assert not found, "imports against the layering:\n" + "\n".join(map(str, found))


def test_a_back_import_is_caught(tmp_path: Path) -> None:
    (tmp_path / "parsers").mkdir()
    (tmp_path / "parsers" / "x.py").write_text("def f():\n    from ingest.store import Store\n")
    (tmp_path / "ingest").mkdir()
    (tmp_path / "ingest" / "y.py").write_text("import channels.ftp\nfrom returnsd import cli\n")
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "z.py").write_text("from ingest import engine\nimport parsers\n")
    found = {(v.path, v.imported) for v in violations(tmp_path)}
    assert found == {
        ("parsers/x.py", "ingest.store"),
        ("ingest/y.py", "channels.ftp"),
        ("ingest/y.py", "returnsd"),
        ("ingest/y.py", "returnsd.cli"),
        ("channels/z.py", "ingest.engine"),
        ("channels/z.py", "parsers"),
    }


def test_allowed_imports_pass(tmp_path: Path) -> None:
    (tmp_path / "channels").mkdir()
    (tmp_path / "channels" / "ok.py").write_text(
        "from ingest.spool import Spool\nimport ingest.errors\nimport os\n"
    )
    (tmp_path / "scheduler.py").write_text("from ingest.config import Settings\n")
    assert violations(tmp_path) == []
