"""Fault injection against real processes: kill -9, a full disk, a stopped database, a stall."""
