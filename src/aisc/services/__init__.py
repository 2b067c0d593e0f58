"""The use cases. Business rules and permissions live here, checked once; the API, CLI and
portal call these functions and stay thin."""
