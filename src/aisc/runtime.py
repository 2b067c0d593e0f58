"""Wires the parts together for one process: settings, database, backend, scheduler, controller."""

from __future__ import annotations

import getpass
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from aisc.backends.base import ExecutorBackend
from aisc.backends.inventory import Node as InventoryNode
from aisc.backends.inventory import load_inventory
from aisc.backends.local import LocalBackend
from aisc.config import Settings
from aisc.services import notifications
from aisc.services.controller import Controller, sync_inventory
from aisc.services.intake import SubmissionIntake
from aisc.services.mailer import Mailer, mailer_from_settings
from aisc.store.db import make_engine, make_session_factory
from aisc.store.migrate import upgrade
from aisc.store.uow import UnitOfWork

if TYPE_CHECKING:
    from aisc.backends.slurm import SlurmCli
    from aisc.services.slurm_controller import SlurmController
    from aisc.services.slurm_names import SlurmNames

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    # the local executor; with the Slurm backend it only lays out job directories and logs,
    # which Slurm writes to the same places
    backend: ExecutorBackend
    inventory: list[InventoryNode]
    controller: Controller | SlurmController
    slurm: SlurmCli | None = None
    slurm_names: SlurmNames | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last_sync: float = 0.0
    # None: the SMTP settings decide (no AISC_SMTP_HOST, no mail); tests put their own here
    mailer: Mailer | None = None
    _last_notify: float = 0.0
    _notify_thread: threading.Thread | None = None
    _notify_lock: threading.Lock = field(default_factory=threading.Lock)
    # job submissions from the API, written in batches (see services/intake.py)
    intake: SubmissionIntake = field(init=False)

    def __post_init__(self) -> None:
        self.intake = SubmissionIntake(self.uow)

    @classmethod
    def build(cls, settings: Settings, migrate: bool = True) -> Runtime:
        settings.home.mkdir(parents=True, exist_ok=True)
        settings.policy_config()  # a bad setting stops start-up before anything else
        settings.validated_backend()
        url = settings.resolved_database_url()
        if migrate:
            upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        backend = LocalBackend(settings.home.resolve(), kill_grace_s=settings.kill_grace_s)
        if settings.backend == "slurm":
            return cls._build_for_slurm(settings, engine, factory, backend)
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

    @classmethod
    def _build_for_slurm(
        cls,
        settings: Settings,
        engine: Engine,
        factory: sessionmaker[Session],
        backend: LocalBackend,
    ) -> Runtime:
        """Slurm schedules and enforces; aisc syncs awards into it and meters what it ran."""
        from aisc.backends.slurm import SlurmCli, SlurmUnavailable
        from aisc.services.slurm_controller import SlurmController
        from aisc.services.slurm_names import SlurmNames

        cli = SlurmCli(settings.slurm_cluster, conf=settings.slurm_conf)
        names = SlurmNames(settings.slurm_prefix)
        controller = SlurmController(
            lambda: UnitOfWork(factory),
            cli,
            names,
            settings.home.resolve(),
            gpus_per_node=settings.slurm_gpus_per_node,
            partition=settings.slurm_partition,
        )
        try:
            inventory = cli.nodes(settings.slurm_gpu_model)
        except SlurmUnavailable as exc:
            # start anyway: the API takes work while Slurm is away; the inventory comes later
            log.warning("Slurm is unavailable at start-up: %s", exc)
            inventory = []
        runtime = cls(
            settings=settings,
            engine=engine,
            session_factory=factory,
            backend=backend,
            inventory=inventory,
            controller=controller,
            slurm=cli,
            slurm_names=names,
        )
        if inventory:
            sync_inventory(runtime.uow(), inventory, "slurm")
        return runtime

    @property
    def backend_name(self) -> str:
        return "slurm" if self.slurm is not None else self.backend.name

    @property
    def backend_status(self) -> str:
        """ "ok", or "degraded: why" while Slurm cannot be reached."""
        return self.controller.status

    def sync_slurm(self) -> None:
        """Awards into Slurm accounts and QOS (the Slurm backend only); a failure is logged and
        the next sync completes the work, since the sync reconciles."""
        if self.slurm is None or self.slurm_names is None:
            return
        from aisc.services.context import utcnow
        from aisc.services.slurm_sync import sync_allocations

        user = self.settings.slurm_user or getpass.getuser()
        report = sync_allocations(self.uow(), self.slurm, self.slurm_names, user, utcnow())
        self._last_sync = time.monotonic()
        log.info("Slurm sync: %s", report)

    def run_notifications(self, now: datetime | None = None) -> notifications.NotificationRun:
        """One periodic notification run: create what is due, then mail what is pending."""
        mailer = self.mailer if self.mailer is not None else mailer_from_settings(self.settings)
        with self._notify_lock:
            return notifications.run_once(self.uow, self.settings, mailer, now)

    def _notify_in_background(self) -> None:
        """Notifications run beside the controller so a slow mail server never delays it."""
        if self._notify_thread is not None and self._notify_thread.is_alive():
            return
        self._last_notify = time.monotonic()

        def run() -> None:
            try:
                self.run_notifications()
            except Exception:  # the database away, say: the next interval tries again
                log.exception("notification run failed; will retry")

        self._notify_thread = threading.Thread(target=run, name="aisc-notify", daemon=True)
        self._notify_thread.start()

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
        if self._notify_thread is not None:
            self._notify_thread.join(timeout=30)
            self._notify_thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            due = time.monotonic() - self._last_sync >= self.settings.slurm_sync_interval_s
            if self.slurm is not None and due:
                try:
                    self.sync_slurm()
                except Exception:  # Slurm away or refusing: the controller reports it
                    log.exception("Slurm sync failed; will retry")
                    self._last_sync = time.monotonic()
            if time.monotonic() - self._last_notify >= self.settings.notify_interval_s:
                try:
                    self._notify_in_background()
                except Exception:
                    log.exception("could not start the notification run")
            try:
                self.controller.cycle()
            except Exception:  # keep running: one bad cycle must not stop metering
                log.exception("controller cycle failed")
            self._stop.wait(self.settings.controller_interval_s)

    def close(self) -> None:
        self.intake.close()
        self.stop_controller()
        self.engine.dispose()
