"""Wires the parts together for one process: settings, database, backend, scheduler, controller."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from aisc.backends.base import ExecutorBackend
from aisc.backends.inventory import Node as InventoryNode
from aisc.backends.inventory import load_inventory
from aisc.backends.local import LocalBackend
from aisc.config import Settings
from aisc.services.controller import Controller, sync_inventory
from aisc.store.db import make_engine, make_session_factory
from aisc.store.migrate import upgrade
from aisc.store.uow import UnitOfWork

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    backend: ExecutorBackend
    inventory: list[InventoryNode]
    controller: Controller
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def build(cls, settings: Settings, migrate: bool = True) -> Runtime:
        settings.home.mkdir(parents=True, exist_ok=True)
        settings.policy_config()  # a bad policy setting stops start-up before anything else
        url = settings.resolved_database_url()
        if migrate:
            upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        backend = LocalBackend(settings.home.resolve(), kill_grace_s=settings.kill_grace_s)
        inventory = load_inventory(settings.inventory, detect=settings.detect_gpus)
        runtime = cls(
            settings=settings,
            engine=engine,
            session_factory=factory,
            backend=backend,
            inventory=inventory,
            controller=Controller(lambda: UnitOfWork(factory), backend, settings.policy_config()),
        )
        sync_inventory(runtime.uow(), inventory, backend.name)
        return runtime

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory)

    def start_controller(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="aisc-controller", daemon=True)
        self._thread.start()

    @property
    def controller_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop_controller(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.controller.cycle()
            except Exception:  # keep running: one bad cycle must not stop metering
                log.exception("controller cycle failed")
            self._stop.wait(self.settings.controller_interval_s)

    def close(self) -> None:
        self.stop_controller()
        self.engine.dispose()
