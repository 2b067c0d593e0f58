"""aisc: run a shared, publicly subsidised AI supercomputing centre."""

__version__ = "0.1.0"
