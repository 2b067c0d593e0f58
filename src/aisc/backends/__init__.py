"""Execution backends: how the controller starts, watches and stops job processes.

Kept import-free on purpose: ``python -m aisc.backends.local_runner`` imports this package
once per job, so anything heavy here would slow every job launch.
"""
