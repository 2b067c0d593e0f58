"""HTTP API (FastAPI): thin routers that validate, call services and map errors."""
