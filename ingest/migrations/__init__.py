"""Alembic migrations of the returnsd schema."""
