"""XML → RawTable, streamed through a hardened parser (defusedxml: no DTD, entities or externals).

The accepted shape (see fixtures/formats/example.xml)::

    <Returns>                              root element, any name
      <Return Campaign="spring">           one element per row, any name
        <ActionId>1000.4636.158011</ActionId>  one child per field: tag = column, text = value
        <Amount>0</Amount>
        <Reason>ITEM_RETURNED</Reason>
      </Return>
      …
    </Returns>

- Attributes of a row element are fields too, ahead of its child elements.
- Namespaces are dropped: ``{urn:x}Amount`` is the column ``Amount``.
- Header = every field name, in order of first appearance; a field missing from a row is NA, and so
  is an empty element (``<Amount/>``). Text is kept exactly (no trimming).
- Line = the row element's ordinal + 1, so the first row is Line 2, as in a CSV file.
- A row whose field holds child elements, or that repeats a field, goes to `RawTable.bad_rows`;
  a row with no fields is skipped (but counted). Malformed XML rejects the whole file.
- Elements nested deeper than `MAX_DEPTH` reject the file: the parser holds every open element,
  so a file of ``<a><a><a>…`` would otherwise cost ~100 bytes of memory per 3 bytes read. More
  than `parsers.base.MAX_COLUMNS` distinct field names reject it too (TOO_LARGE).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

import numpy as np
import pyarrow as pa
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from parsers.base import ParseLimits, RawTable, check_width, text_frame
from parsers.errors import EMPTY_FILE, NO_HEADER, TOO_MANY_ROWS, UNREADABLE, FileRejected

SHAPE = "<Returns><Return><ActionId>…</ActionId><Amount>…</Amount>…</Return>…</Returns>"
MAX_DEPTH = 32  # the shape needs 3 levels; a nested field's content is a bad row, not an error


@dataclass
class _Collector:
    """Rows gathered while the parser streams through the document."""

    max_rows: int
    header: dict[str, None] = field(default_factory=dict)  # ordered set of field names
    rows: list[dict[str, str | None]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    row_tags: dict[str, None] = field(default_factory=dict)
    ordinal: int = 0

    def start_row(self, element: Element) -> _Row:
        """Begin a row, its attributes being its first fields."""
        self.ordinal += 1
        self.row_tags.setdefault(local_name(element.tag))
        row = _Row(line=self.ordinal + 1)
        for name, value in element.attrib.items():
            row.add(local_name(name), value)
        return row

    def finish_row(self, row: _Row) -> None:
        """Keep a complete row, or record why it is bad; skip a row without any value."""
        if any(row.values.values()):
            self.header.update(dict.fromkeys(row.values))
            check_width(len(self.header))
        if row.problem:
            self.bad_rows.append((row.line, row.problem))
        elif any(row.values.values()):
            self.rows.append(row.values)
            self.lines.append(row.line)
        if len(self.rows) + len(self.bad_rows) > self.max_rows:
            raise FileRejected(
                TOO_MANY_ROWS, f"the file has more than {self.max_rows:,} rows; split it"
            )


@dataclass
class _Row:
    """One row element's fields while it is being read."""

    line: int
    values: dict[str, str | None] = field(default_factory=dict)
    problem: str | None = None

    def add(self, name: str, value: str | None) -> None:
        """Add a field, noting a repeat as this row's problem."""
        if name in self.values:
            self.problem = self.problem or f"field <{name}> appears more than once in this row"
        self.values[name] = value or None


def read_xml(data: bytes, limits: ParseLimits) -> RawTable:
    """Stream an XML file of row elements into text cells."""
    collector = _Collector(limits.max_rows)
    try:
        _stream(data, collector)
    except ParseError as exc:
        line, column = exc.position
        reason = str(exc).partition(": line ")[0]  # expat repeats the position; say it once
        raise FileRejected(
            UNREADABLE, f"malformed XML at line {line}, column {column + 1}: {reason}"
        ) from None
    except DefusedXmlException:
        raise FileRejected(
            UNREADABLE,
            "XML with DTD/entity declarations is not accepted; remove the <!DOCTYPE …> part "
            "(if this is a web page, download the returns file itself)",
        ) from None
    except (ValueError, LookupError) as exc:  # e.g. an encoding expat does not know
        raise FileRejected(UNREADABLE, f"the XML could not be read ({exc})") from None
    return _to_table(collector)


def _stream(data: bytes, collector: _Collector) -> None:
    """Walk the document by start/end events, clearing each row once it has been read."""
    depth = 0
    root: Element | None = None
    row: _Row | None = None
    events = iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True)
    for event, element in events:
        if event == "start":
            depth += 1
            if depth > MAX_DEPTH:
                raise FileRejected(UNREADABLE, _too_deep(row))
            if depth == 1:
                root = element
            elif depth == 2:
                row = collector.start_row(element)
                check_width(len(row.values))
            elif depth == 4 and row is not None:
                row.problem = row.problem or _nested(element)
            continue
        if depth == 3 and row is not None:
            row.add(local_name(element.tag), element.text)
            check_width(len(row.values))
        elif depth == 2 and row is not None and root is not None:
            collector.finish_row(row)
            root.clear()  # drop the rows read so far: memory stays flat
        depth -= 1


def _too_deep(row: _Row | None) -> str:
    where = f" in the row at line {row.line}" if row else ""
    return f"elements are nested more than {MAX_DEPTH} levels deep{where}; the shape is {SHAPE}"


def _nested(element: Element) -> str:
    return (
        f"a field holds the element <{local_name(element.tag)}>; each field must be plain text "
        f"(shape: {SHAPE})"
    )


def local_name(tag: str) -> str:
    """Strip an ElementTree namespace prefix: '{urn:x}Amount' → 'Amount'."""
    return tag.rpartition("}")[2]


def _to_table(collector: _Collector) -> RawTable:
    if not collector.ordinal:
        raise FileRejected(EMPTY_FILE, f"the XML root holds no row elements (shape: {SHAPE})")
    header = list(collector.header)
    if not header:
        raise FileRejected(
            NO_HEADER, f"no row element holds a field with a value (expected shape: {SHAPE})"
        )
    columns = [pa.array([row.get(name) for row in collector.rows], pa.string()) for name in header]
    warnings = []
    if len(collector.row_tags) > 1:
        tags = ", ".join(f"<{tag}>" for tag in collector.row_tags)
        warnings.append(f"the row elements have different names ({tags}); all were read as rows")
    return RawTable(
        header=header,
        frame=text_frame(columns),
        lines=np.array(collector.lines, np.int64),
        format="xml",
        warnings=warnings,
        bad_rows=collector.bad_rows,
    )
