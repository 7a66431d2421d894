"""Channels: receive files, hand them to the spool, acknowledge. Nothing else."""
