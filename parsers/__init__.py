"""Pure parsers: file bytes → one canonical, validated table. No I/O beyond the bytes given.

The contract, top to bottom:

- `parsers.readers.read_table(name, data, limits)` detects the format by content (CSV, XML,
  XLSX, or one of them in a .gz/.zip) and returns a `parsers.base.RawTable`: the header and every
  cell as text, each row's line number, the rows that could not be read (`bad_rows`), warnings,
  and the dialect the file was written in (`encoding`, `delimiter`, `bom`). The only exception
  that leaves it is `parsers.errors.FileRejected` (a file-level failure with a code).
- `parsers.canonical.canonicalise(raw, custom_codes)` maps the columns onto the schema
  (`parsers.schema`) and runs every row through the rules of `parsers.validation`; invalid rows
  carry `error_code` / `error_message`, and the other rows stay usable.
- `parsers.errors` imports nothing and holds the root of returnsd's error tree, which
  `ingest.errors` re-exports; this package imports nothing from the layers above it.

A new format is one module with a `read_<format>(data, limits) -> RawTable` function, an entry in
`parsers.readers.DATA_READERS` and `EXTENSIONS`, a content test in `detect_format`, and fixtures
in fixtures/formats (with their expected tables in tests/test_readers.py).
"""
