"""Randomized end-to-end scenarios with injected faults (see scenario.py)."""
