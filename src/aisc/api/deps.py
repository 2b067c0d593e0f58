"""Dependencies shared by the routers: the runtime, a unit of work and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from aisc.domain.errors import AuthenticationFailed
from aisc.runtime import Runtime
from aisc.services import accounts
from aisc.services.context import Actor
from aisc.store.uow import UnitOfWork

bearer = HTTPBearer(auto_error=False, description="An aisc API token")


# Dependencies that do no I/O are async: FastAPI runs a plain def in its thread pool, a hop
# that costs more than the function.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_uow(runtime: RuntimeDep) -> UnitOfWork:
    return runtime.uow()


UowDep = Annotated[UnitOfWork, Depends(get_uow)]


async def get_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The bearer token as sent, not yet checked; a request without one is refused here, before
    its body is read."""
    if not credentials or not credentials.credentials:
        raise AuthenticationFailed(accounts.TOKEN_REQUIRED)
    return credentials.credentials


TokenDep = Annotated[str, Depends(get_token)]


def get_actor(runtime: RuntimeDep, token: TokenDep) -> Actor:
    return accounts.authenticate(runtime.uow(), token)


ActorDep = Annotated[Actor, Depends(get_actor)]
