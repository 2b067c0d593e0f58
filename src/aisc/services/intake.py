"""Job submissions from many concurrent requests, written in batches by one thread.

A submission costs little to check and much to commit (a transaction, a write lock, a sync to
disk). Here one thread takes every submission that arrived while the last batch was being
written and writes them together: each token checked and each submission checked on its own,
as `jobs.queue_submissions` does, then one commit for all (group commit). A request is answered
only after the commit that holds its job, so an accepted job is as durable as before.

A batch that fails as a whole (the database away, say) is written again one submission at a
time, so one submission's trouble cannot refuse the others.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from aisc.domain.errors import AuthenticationFailed, DomainError, Unavailable
from aisc.services import accounts, jobs
from aisc.services.context import Actor, Clock, utcnow
from aisc.store.tables import Job
from aisc.store.uow import UnitOfWork

log = logging.getLogger(__name__)

MAX_BATCH = 256  # submissions per transaction: bounds how long one batch holds the write lock


@dataclass
class _Pending:
    token: str | None
    request: jobs.JobRequest
    at: datetime
    future: Future[Job] = field(default_factory=Future)


class SubmissionIntake:
    """Queues job submissions for API requests; `submit` returns the future of each job."""

    def __init__(
        self, new_uow: Callable[[], UnitOfWork], clock: Clock = utcnow, max_batch: int = MAX_BATCH
    ) -> None:
        self._new_uow = new_uow
        self._clock = clock
        self._max_batch = max_batch
        self._waiting: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, token: str | None, request: jobs.JobRequest) -> Future[Job]:
        """The job once it is committed, or the DomainError that refused it. Cancelling the
        future before its batch is written withdraws the submission."""
        with self._lock:
            if self._closed:
                raise Unavailable("the server is shutting down; submit the job again shortly")
            # stamped under the lock: arrival times follow the order batches are written in
            pending = _Pending(token, request, self._clock())
            if self._thread is None:
                self._start_thread()
            self._waiting.put(pending)
        return pending.future

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="aisc-job-intake", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 30) -> None:
        """Write what is waiting, then stop; later submissions are refused."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            self._waiting.put(None)
        if thread is not None:
            thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            first = self._waiting.get()
            batch = [] if first is None else [first]
            stop = first is None
            while not stop and len(batch) < self._max_batch:
                try:
                    more = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            # a request whose caller went away before its batch began is withdrawn
            live = [p for p in batch if p.future.set_running_or_notify_cancel()]
            try:
                if live:
                    self._write_or_retry(live)
            except BaseException as exc:  # this thread is going down: no request may hang
                for pending in live:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                with self._lock:
                    if not self._closed:
                        self._start_thread()  # for what waits now and what comes next
                raise
            if stop:
                return

    def _write_or_retry(self, batch: list[_Pending]) -> None:
        try:
            outcomes = self._write(batch)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("could not write a job submission")
                batch[0].future.set_exception(exc)
                return
            log.warning("a batch of %d submissions failed; writing each alone", len(batch))
            for pending in batch:
                self._write_or_retry([pending])
            return
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, DomainError):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    def _write(self, batch: Sequence[_Pending]) -> list[Job | DomainError]:
        """One transaction: who each token is, then every submission checked and queued."""
        with self._new_uow() as uow:
            tokens = {p.token for p in batch if p.token}
            actors = accounts.identify(uow.session, tokens) if tokens else {}
            outcomes: list[Job | DomainError | None] = []
            submissions: list[jobs.Submission] = []
            for pending in batch:
                actor = _actor(actors, pending.token)
                if isinstance(actor, DomainError):
                    outcomes.append(actor)
                else:
                    outcomes.append(None)
                    submissions.append(jobs.Submission(actor, pending.request, pending.at))
            queued = iter(jobs.queue_submissions(uow, submissions))
            uow.commit()
        return [outcome if outcome is not None else next(queued) for outcome in outcomes]


def _actor(
    actors: dict[str, Actor | AuthenticationFailed], token: str | None
) -> Actor | AuthenticationFailed:
    if not token:
        return AuthenticationFailed(accounts.TOKEN_REQUIRED)
    return actors[token]
