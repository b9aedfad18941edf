"""Operator commands: doctor, backfill, replay and their progress display. Above the components, below cli."""
