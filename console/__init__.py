"""The web console: impact-style Pending / Reversed actions and File Submissions pages.

Server-rendered (FastAPI + Jinja2, htmx 2 vendored for in-place updates). It reads through
`ingest.queries` and changes actions only through `ingest.operations`; uploads go through the
spool like every channel. Built from a `ConsoleContext` by the composition root.
"""
