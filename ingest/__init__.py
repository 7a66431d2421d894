"""returnsd core: spool, engine, store, results, daemon and CLI."""
