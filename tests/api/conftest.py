"""The HTTP fixtures live in tests/conftest.py; re-exported for modules that import them."""

from tests.conftest import TokenFor, auth, client, live_server, runtime

__all__ = ["TokenFor", "auth", "client", "live_server", "runtime"]
