"""The routes an application serves, for the authorization matrices of the API and the portal."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


def flat_routes(app: FastAPI) -> list[Any]:
    """Every route, with those of included routers brought up to the top."""
    try:  # FastAPI 0.16x keeps included routers nested inside app.routes
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older versions list every route flat
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def methods_of(route: Any) -> set[str]:
    methods = set(route.methods or ())
    if "GET" in methods:
        methods.discard("HEAD")  # Starlette adds HEAD beside GET; it answers as GET does
    return methods
