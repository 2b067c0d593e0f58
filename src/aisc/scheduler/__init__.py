"""Scheduling policy: pure functions of (pending jobs, free GPUs, now) that return placements.

The live controller and the simulator call this same code.
"""
