"""The composition root: wires channels, engine, scheduler and CLI; nothing imports it."""
