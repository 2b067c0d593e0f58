"""The policy core: multifactor priority, fair share, EASY backfill, borrowing with preemption and
GPU placement, over incrementally kept state. Pure: no I/O, no clock but the `now` it is given.

A driver (the live controller or the simulator) tells it what happens, `submit`, `cancel`,
`started`, `finished`, `preempted`, and asks `cycle(now)` what to do next. `cycle` does not change
the scheduler's state; the driver confirms each start with `started` and each preemption with
`preempted`, so a start the driver cannot carry out (the allocation is over quota, say) leaves
the job pending.

One cycle, in steps:
 1. order: priority of every pending job as one vector operation, then a stable sort
    (with borrowing on, jobs within their project's guarantee before jobs that would borrow,
    as Kueue orders; then priority, then submit time, then job id, so the same input gives
    the same order);
 2. reclaim: the first few pending jobs of projects under their guaranteed share that do not
    fit may preempt borrowed jobs (the fewest, most recently started, past their minimum run);
 3. walk the queue in order: start what fits (best fit on one node for jobs up to a node's
    size, whole nodes for larger ones); the first blocked jobs get reserved start times from
    the running jobs' time limits; a later job may start only if it ends before the reserved
    start of every node it uses, or uses only GPUs those reservations do not need;
 4. stop when no GPU is free and every reservation is made. Jobs that cannot fit anywhere
    are skipped in bulk by a vectorised bound, so the walk stays short on a deep queue.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from aisc.scheduler.config import PolicyConfig
from aisc.scheduler.fairshare import FairShare
from aisc.scheduler.interface import (
    CycleResult,
    Explanation,
    NodeGpus,
    NodeSpec,
    PendingJob,
    Placement,
    PriorityFactors,
    Reservation,
)
from aisc.scheduler.queue import PendingQueue
from aisc.scheduler.rules import Unschedulable, check_request

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
INF = math.inf
HEAD = 64  # jobs ordered up front; most cycles decide within the head of the queue
CHUNK = 256  # backfill candidates tried between two refreshes of the vectorised bound

__all__ = ["Scheduler", "Unschedulable"]


def _any(values: npt.NDArray[Any]) -> bool:
    """`values.any()` for the cycle's hot path: count_nonzero skips ndarray.any's Python-level
    dispatch, about five times faster on arrays of a few hundred elements."""
    return bool(np.count_nonzero(values))


@dataclass
class RunningJob:
    job: PendingJob
    project_code: int
    start: float
    end: float  # start + time limit: when its GPUs are surely free again
    nodes: tuple[tuple[int, tuple[int, ...]], ...]  # (node index, local GPU slots)
    borrowed: bool
    gpus: int = 0
    per_node: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.per_node = {i: len(slots) for i, slots in self.nodes}
        self.gpus = sum(self.per_node.values())

    def gpus_on(self, node: int) -> int:
        return self.per_node.get(node, 0)


class _Ranking:
    """The pending jobs' order, computed lazily. Positions index `slots` and the keys; the head
    of the queue comes by partial selection, a subset by sorting only that subset. Keys are
    lexsort keys, least significant first; None means `slots` is already in order."""

    def __init__(
        self,
        slots: IntArray,
        keys: tuple[npt.NDArray[Any], ...] | None,
        owners_first: bool = False,
    ) -> None:
        self.slots = slots
        self.keys = keys
        # every job within its project's guarantee comes before every job that would borrow
        self.owners_first = owners_first

    def __len__(self) -> int:
        return len(self.slots)

    def first(self, n: int, among: IntArray | None = None) -> IntArray:
        """Positions of the first n jobs in order (of all jobs, or of `among`)."""
        pool = np.arange(len(self.slots)) if among is None else among
        if self.keys is None:
            return np.sort(pool)[:n]
        if n >= len(pool):
            return self.sort(pool)
        primary = self.keys[-1] if among is None else self.keys[-1][pool]
        cut = np.partition(primary, n - 1)[n - 1]
        return self.sort(pool[primary <= cut])[:n]  # ties at the cut come along, then go

    def sort(self, positions: IntArray) -> IntArray:
        if self.keys is None:
            return np.sort(positions)
        return positions[np.lexsort(tuple(k[positions] for k in self.keys))]

    def rest(self, taken: IntArray) -> IntArray:
        mask = np.ones(len(self.slots), np.bool_)
        mask[taken] = False
        return mask.nonzero()[0]


@dataclass
class _Cycle:
    """Working copies for one cycle; the scheduler's own state stays untouched."""

    now: float
    free: IntArray
    shadow: FloatArray  # earliest reserved start on each node (inf: none)
    extra: IntArray  # GPUs on the node that reservations do not need at their start
    claimed: IntArray
    project_gpus: IntArray
    guarantee: FloatArray
    freed: dict[int, list[int]]  # node -> slots freed by this cycle's preemptions
    taken: dict[int, list[int]]  # node -> slots handed out in this cycle
    new_releases: dict[int, list[tuple[float, int]]]  # node -> (end, gpus) of this cycle's starts
    preempted: set[int]
    # per node, GPUs of borrowed jobs that could be preempted now (any requester): a bound
    lendable: IntArray | None = None


class Scheduler:
    def __init__(self, nodes: Sequence[NodeSpec], config: PolicyConfig | None = None) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        self.config = config or PolicyConfig()
        ordered = sorted(nodes, key=lambda n: n.name)
        self.specs = ordered
        self.node_index = {n.name: i for i, n in enumerate(ordered)}
        if len(self.node_index) != len(ordered):
            raise ValueError("node names must be unique")
        self.model_code: dict[str, int] = {}
        for n in ordered:
            self.model_code.setdefault(n.gpu_model, len(self.model_code))
        self.node_model = np.array([self.model_code[n.gpu_model] for n in ordered], np.int64)
        self.node_size = np.array([n.gpus for n in ordered], np.int64)
        self.nodes_of_model = [
            np.flatnonzero(self.node_model == code) for code in range(len(self.model_code))
        ]
        # each node's index within its model's node list
        self.model_position = np.zeros(len(ordered), np.int64)
        for ix in self.nodes_of_model:
            self.model_position[ix] = np.arange(len(ix))
        self.model_total = np.array([self.node_size[ix].sum() for ix in self.nodes_of_model])
        self.model_max_node = np.array([self.node_size[ix].max() for ix in self.nodes_of_model])
        self.total_gpus = int(self.node_size.sum())
        self.free = self.node_size.copy()
        self.free_slots: list[list[int]] = [list(range(n.gpus)) for n in ordered]
        # per node, (end, job id) of running jobs, sorted: the release profile for reservations
        self.releases: list[list[tuple[float, int, int]]] = [[] for _ in ordered]  # end, id, gpus
        self.model_name = list(self.model_code)
        # running jobs on each node, and GPUs each node lends to borrowed jobs: for preemption
        self.on_node: list[dict[int, RunningJob]] = [{} for _ in ordered]
        # per node, the first and last time a running job reaches its limit (inf / -inf: none)
        self.first_end = np.full(len(ordered), INF)
        self.last_end = np.full(len(ordered), -INF)
        self.borrowed_gpus = np.zeros(len(ordered), np.int64)
        self.borrowed_runs: dict[int, RunningJob] = {}
        self.lent_on_node: list[dict[int, RunningJob]] = [{} for _ in ordered]
        # running GPUs per project and the sum of GPUs x start, for running usage in O(1)
        self.project_start_sum: FloatArray = np.zeros(0)
        self.queue = PendingQueue()
        self._guarantee_of: FloatArray | None = None
        self._guarantee_cached: FloatArray = np.zeros(0)
        self._requests_checked: set[tuple[int, str]] = set()
        # priority lies within +-(sum of weights): a sort key pushed by more than twice that
        # puts a job after every job that is not pushed (see `_ranking`)
        w = self.config.weights
        self._borrow_offset = 2.0 * sum(abs(x) for x in (w.age, w.fairshare, w.size, w.qos)) + 1
        self.fairshare = FairShare(self.config.usage_half_life_s)
        self.running: dict[int, RunningJob] = {}
        self.project_gpus: IntArray = np.zeros(0, np.int64)
        self.last_reasons: dict[int, str] = {}
        self._held_by_reservation: IntArray = np.zeros(0, np.int64)
        self.last_reservations: dict[int, Reservation] = {}

    # -- what the driver tells the scheduler ---------------------------------------------------

    def check(self, gpus: int, gpu_model: str) -> None:
        """Raise Unschedulable, with the reason, for a request this cluster can never run."""
        if (gpus, gpu_model) in self._requests_checked:
            return  # the nodes never change, so a request that passed once always passes
        check_request(self.specs, gpus, gpu_model)
        self._requests_checked.add((gpus, gpu_model))

    def submit(self, job: PendingJob) -> None:
        if job.job_id in self.running:
            raise ValueError(f"job {job.job_id} is already running")
        self.check(job.gpus, job.gpu_model)
        code = self.fairshare.code(job.project)
        self._grow_projects()
        self._enqueue(job, code)

    def cancel(self, job_id: int) -> bool:
        return self.queue.remove(job_id) is not None

    def set_shares(self, shares: dict[int, float], org_of: dict[int, int] | None = None) -> None:
        """Entitlements per project (e.g. awarded GPU-hours over the award's period)."""
        self.fairshare.set_shares(shares, org_of if self.config.group_by_org else None)
        self._grow_projects()

    def add_usage(self, project: int, gpu_seconds: float, at: float) -> None:
        """Usage from before this scheduler started (the record), for fair share."""
        self.fairshare.add_usage(project, gpu_seconds, at)
        self._grow_projects()

    def started(self, placement: Placement, now: float) -> None:
        job = self.queue.remove(placement.job_id)
        if job is None:
            raise ValueError(f"job {placement.job_id} is not pending")
        self.adopt(job, placement, now)

    def adopt(self, job: PendingJob, placement: Placement, start: float) -> None:
        """Take in a running job (after `started`, or found running when the driver starts)."""
        code = self.fairshare.code(job.project)
        self._grow_projects()
        nodes = []
        for part in placement.nodes:
            i = self.node_index[part.node]
            spec = self.specs[i]
            slots = tuple(
                spec.gpu_indices.index(g) if spec.gpu_indices else g for g in part.gpu_indices
            )
            for slot in slots:
                self.free_slots[i].remove(slot)
            self.free[i] -= len(slots)
            nodes.append((i, slots))
            bisect.insort(self.releases[i], (start + job.time_limit_s, job.job_id, len(slots)))
            self._ends_changed(i)
        run = RunningJob(
            job, code, start, start + job.time_limit_s, tuple(nodes), placement.borrowed
        )
        self.running[job.job_id] = run
        for i, slots in run.nodes:
            self.on_node[i][job.job_id] = run
            if run.borrowed:
                self.borrowed_gpus[i] += len(slots)
                self.lent_on_node[i][job.job_id] = run
        if run.borrowed:
            self.borrowed_runs[job.job_id] = run
        self.project_gpus[code] += run.gpus
        self.project_start_sum[code] += run.gpus * start

    def finished(self, job_id: int, now: float) -> None:
        run = self._release(job_id, now)
        if run is None:
            raise ValueError(f"job {job_id} is not running")

    def preempted(self, job_id: int, now: float) -> None:
        """A running job was stopped to reclaim its GPUs: it waits again, as submitted."""
        run = self._release(job_id, now)
        if run is None:
            raise ValueError(f"job {job_id} is not running")
        self._enqueue(run.job, run.project_code)

    def _release(self, job_id: int, now: float) -> RunningJob | None:
        run = self.running.pop(job_id, None)
        if run is None:
            return None
        for i, slots in run.nodes:
            del self.on_node[i][job_id]
            if run.borrowed:
                self.borrowed_gpus[i] -= len(slots)
                del self.lent_on_node[i][job_id]
            for slot in slots:
                bisect.insort(self.free_slots[i], slot)
            self.free[i] += len(slots)
            entry = (run.end, job_id, len(slots))
            k = bisect.bisect_left(self.releases[i], entry)
            if k < len(self.releases[i]) and self.releases[i][k] == entry:
                del self.releases[i][k]
            self._ends_changed(i)
        self.borrowed_runs.pop(job_id, None)
        self.project_gpus[run.project_code] -= run.gpus
        self.project_start_sum[run.project_code] -= run.gpus * run.start
        self.fairshare.add_usage(run.job.project, run.gpus * max(0.0, now - run.start), now)
        return run

    def _ends_changed(self, i: int) -> None:
        ends = self.releases[i]
        self.first_end[i] = ends[0][0] if ends else INF
        self.last_end[i] = ends[-1][0] if ends else -INF

    @property
    def free_gpus(self) -> int:
        return int(self.free.sum())

    def may_fit(self, gpus: int, gpu_model: str) -> bool:
        """An upper bound: whether a request could start now on the free GPUs, ignoring
        priority and reservations. A driver may skip a cycle for arrivals that cannot."""
        code = self.model_code[gpu_model]
        ix = self.nodes_of_model[code]
        free = self.free[ix]
        if gpus <= self.model_max_node[code]:
            return bool(free.max() >= gpus)
        return bool(self.node_size[ix][free == self.node_size[ix]].sum() >= gpus)

    def may_reclaim(self, project: int, gpus: int) -> bool:
        """Whether a new job could take borrowed GPUs back: it is within its project's
        guarantee and some GPUs are lent. (When no GPU is free and this is False for every
        new job, a cycle can change nothing: drivers may skip it.)"""
        cfg = self.config
        if not (cfg.borrowing and cfg.preemption) or not _any(self.borrowed_gpus):
            return False
        code = self.fairshare.code(project)
        self._grow_projects()
        guarantee = self._guarantee()
        return bool(self.project_gpus[code] + gpus <= guarantee[code])

    def _grow_projects(self) -> None:
        missing = self.fairshare.size - len(self.project_gpus)
        if missing > 0:
            self.project_gpus = np.append(self.project_gpus, np.zeros(missing, np.int64))
            self.project_start_sum = np.append(self.project_start_sum, np.zeros(missing))

    # -- priority ----------------------------------------------------------------------------

    def _factors(self, slots: IntArray, now: float) -> tuple[FloatArray, ...]:
        q, cfg = self.queue, self.config
        age = self._age(slots, now)
        fairshare = self._fairshare(slots, now)
        size = self._size(q.gpus[slots])
        qos = q.qos[slots]
        w = cfg.weights
        priority = w.age * age + w.fairshare * fairshare + q.base_priority[slots]
        return age, fairshare, size, qos, priority

    def _priority(self, slots: IntArray, now: float) -> FloatArray:
        """The same sum as `_factors`, without keeping the factors: the cycle's hot path."""
        w = self.config.weights
        priority: FloatArray = (
            w.age * self._age(slots, now)
            + w.fairshare * self._fairshare(slots, now)
            + self.queue.base_priority[slots]
        )
        return priority

    def _age(self, slots: IntArray, now: float) -> FloatArray:
        # np.minimum/np.maximum: the same values as np.clip, without its dispatch overhead
        age: FloatArray = np.minimum(
            np.maximum((now - self.queue.submit[slots]) / self.config.max_age_s, 0.0), 1.0
        )
        return age

    def _fairshare(self, slots: IntArray, now: float) -> FloatArray:
        factor: FloatArray = self.fairshare.factors(now, self._running_usage(now))
        return factor[self.queue.project[slots]]

    def _size(self, gpus: IntArray | int) -> FloatArray:
        size: FloatArray = np.asarray(gpus / self.total_gpus, np.float64)
        return 1.0 - size if self.config.favor_small else size

    def _enqueue(self, job: PendingJob, project_code: int) -> None:
        """Add a job to the queue with the parts of its priority that never change."""
        slot = self.queue.add(job, project_code, self.model_code[job.gpu_model])
        w = self.config.weights
        self.queue.base_priority[slot] = w.size * float(self._size(job.gpus)) + w.qos * float(
            self.queue.qos[slot]
        )

    def _running_usage(self, now: float) -> FloatArray:
        """GPU-seconds of running jobs so far, per project: sum of gpus x (now - start)."""
        usage: FloatArray = np.maximum(self.project_gpus * now - self.project_start_sum, 0.0)
        return usage

    def _ranking(
        self, now: float, order: IntArray | None = None, slots: IntArray | None = None
    ) -> _Ranking:
        """The pending jobs' order (or that of the jobs in `slots`): by the policy, or as given
        (an oracle's order). A job's keys do not depend on which other jobs are ranked."""
        if order is not None:
            return _Ranking(order, None)
        q = self.queue
        if slots is None:
            slots = q.live_slots()
        if self.config.ordering == "fifo":
            return _Ranking(slots, (q.ids[slots], q.submit[slots]))
        key = -self._priority(slots, now)
        if self.config.borrowing:
            # as Kueue orders its heads: jobs that fit within their project's guarantee come
            # before jobs that would borrow, then priority. Otherwise GPUs freed while an owner
            # waits go to a borrower of higher fair-share priority, only to be reclaimed from it
            # minutes later, its run lost.
            projects = q.project[slots]
            borrows = self.project_gpus[projects] + q.gpus[slots] > self._guarantee()[projects]
            key = np.where(borrows, key + self._borrow_offset, key)
        return _Ranking(slots, (q.ids[slots], q.submit[slots], key), self.config.borrowing)

    def _order(self, now: float) -> IntArray:
        ranking = self._ranking(now)
        return ranking.slots[ranking.first(len(ranking))]

    def ordered_ids(self, now: float) -> list[int]:
        """Pending job ids in the order the next cycle will consider them."""
        return [int(i) for i in self.queue.ids[self._order(now)]]

    def order_by_key(self, now: float) -> IntArray:
        """Pending slots ordered by each job's sort_key (the simulator's SRTF oracle)."""
        q = self.queue
        slots = q.live_slots()
        return slots[np.lexsort((q.ids[slots], q.submit[slots], q.key[slots]))]

    def _guarantee(self) -> FloatArray:
        """Each project's guaranteed GPUs: its share of the cluster, rounded down. Kept until
        the shares change (they are a new array then); callers must not modify it."""
        shares = self.fairshare.normalised_shares()
        if self._guarantee_of is not shares:
            self._guarantee_cached = np.floor(shares * self.total_gpus)
            self._guarantee_of = shares
        return self._guarantee_cached

    # -- the cycle ---------------------------------------------------------------------------

    def cycle(self, now: float, order: IntArray | None = None) -> CycleResult:
        cfg = self.config
        c = _Cycle(
            now=now,
            free=self.free.copy(),
            shadow=np.full(len(self.specs), INF),
            extra=np.zeros(len(self.specs), np.int64),
            claimed=np.zeros(len(self.specs), np.int64),
            project_gpus=self.project_gpus.copy(),
            guarantee=self._guarantee(),
            freed={},
            taken={},
            new_releases={},
            preempted=set(),
        )
        starts: list[Placement] = []
        reservations: list[Reservation] = []
        reasons: dict[int, str] = {}
        done: set[int] = set()
        # With no GPU free and no reservation wanted for its own sake, the walk below would stop
        # at its first job: only reclaiming can act, so the whole queue is ordered only if a
        # reclaim leaves GPUs free. (The simulator meets this on most ticks and full clusters.)
        ranking: _Ranking | None = None
        head = np.zeros(0, np.int64)
        if order is not None or cfg.always_reserve or _any(self.free):
            ranking = self._ranking(now, order)
            head = ranking.first(HEAD)
        if cfg.borrowing and cfg.preemption and _any(self.borrowed_gpus):
            candidates = self._reclaim_candidates(c, ranking, head)
            for placement in self._reclaim(c, candidates, reasons):
                starts.append(placement)
                done.add(placement.job_id)
        if ranking is None:
            if not _any(c.free):
                self.last_reasons = reasons
                self.last_reservations = {}
                self._held_by_reservation = np.zeros(0, np.int64)
                return CycleResult(
                    starts=starts,
                    preemptions=sorted(c.preempted),
                    reservations=[],
                    pending=len(self.queue),
                )
            ranking = self._ranking(now)
            head = ranking.first(HEAD)
        q = self.queue
        reservations_left = cfg.reservations if cfg.backfill else 0
        held: list[IntArray] = []  # ids skipped in bulk because of a reservation
        # 1. in strict order until the reservations are made (or, without backfill, until the
        #    first job that cannot start): usually only the head of the queue
        walked = 0
        stop = reservations_left == 0 and cfg.backfill
        while not stop and walked < len(ranking):
            if walked == len(head):
                head = ranking.first(len(ranking))  # a long head: order the whole queue
            s = int(ranking.slots[head[walked]])
            walked += 1
            job_id = int(q.ids[s])
            if job_id in done or self._try_start(c, s, starts, reasons):
                continue
            if not cfg.backfill:
                break  # strict order: the first job that cannot start holds the rest
            if not cfg.always_reserve and not _any(c.free):
                break  # nothing free to backfill: a reservation would change nothing now
            gpus, model = int(q.gpus[s]), int(q.model[s])
            reservation = self._reserve(c, job_id, gpus, model, float(q.limit[s]))
            if reservation is not None:
                reservations.append(reservation)
                reasons[job_id] = "reserved"
                reservations_left -= 1
                stop = reservations_left == 0
        # 2. backfill: of the rest, only jobs that could fit now are tried, in order, a chunk
        #    at a time (each chunk selected, not the whole pool sorted, since the free GPUs
        #    usually run out within the first), each later chunk filtered again
        if cfg.backfill and stop and _any(c.free) and walked < len(ranking):
            rest = ranking.rest(head[:walked])
            could, delayed = self._could_fit(c, ranking.slots[rest])
            held.append(q.ids[ranking.slots[rest[delayed]]])
            pool = rest[could]
            left = np.ones(len(ranking), np.bool_)
            first_chunk = True
            while len(pool) and _any(c.free):
                picked = ranking.first(CHUNK, among=pool)
                left[picked] = False
                pool = pool[left[pool]]
                chunk = ranking.slots[picked]
                if not first_chunk:
                    more, later = self._could_fit(c, chunk)
                    held.append(q.ids[chunk[later]])
                    chunk = chunk[more]
                first_chunk = False
                for s in chunk.tolist():
                    started = int(q.ids[s]) not in done and self._try_start(c, s, starts, reasons)
                    if started and not _any(c.free):
                        break
        self.last_reasons = reasons
        self.last_reservations = {r.job_id: r for r in reservations}
        # to explain the jobs the walk skipped in bulk
        self._held_by_reservation = np.concatenate(held) if held else np.zeros(0, np.int64)
        return CycleResult(
            starts=starts,
            preemptions=sorted(c.preempted),
            reservations=reservations,
            pending=len(ranking),
        )

    def _try_start(
        self, c: _Cycle, s: int, starts: list[Placement], reasons: dict[int, str]
    ) -> bool:
        """Start the job in slot s if it fits now; otherwise note why it did not."""
        q = self.queue
        job_id, gpus = int(q.ids[s]), int(q.gpus[s])
        end = c.now + float(q.limit[s])
        parts, why = self._fit(c, gpus, int(q.model[s]), end)
        if parts is None:
            reasons[job_id] = why
            return False
        starts.append(self._take(c, job_id, int(q.project[s]), gpus, end, parts))
        return True

    def _could_fit(
        self, c: _Cycle, chunk: IntArray
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """An upper bound, in one vector pass: False where a job surely cannot start now.

        Per model: the largest free block on nodes without reservations; on reserved nodes,
        the largest block usable past the reserved start (`extra`), and for each job size the
        latest reserved start among nodes with that much free (a job ending before it fits).
        """
        q = self.queue
        gpus, model = q.gpus[chunk], q.model[chunk]
        ends = c.now + q.limit[chunk]
        result = np.zeros(len(chunk), np.bool_)
        roomy = np.zeros(len(chunk), np.bool_)
        for code, ix in enumerate(self.nodes_of_model):
            mine = model == code
            if not _any(mine):
                continue
            free, size, shadow = c.free[ix], self.node_size[ix], c.shadow[ix]
            open_ = shadow == INF
            usable = np.where(open_, free, np.minimum(free, c.extra[ix]))
            largest = int(self.model_max_node[code])
            g, e = gpus[mine], ends[mine]
            fits = g <= usable.max()
            # a job that ends before a reservation may use that node's free GPUs
            # latest[n]: the latest reserved start among reserved nodes with at least n free
            latest = np.full(largest + 1, -INF)
            reserved = ~open_
            if _any(reserved):
                np.maximum.at(latest, np.minimum(free[reserved], largest), shadow[reserved])
                latest = np.maximum.accumulate(latest[::-1])[::-1]
            single = g <= largest
            fits |= single & (e <= latest[np.minimum(g, largest)])
            whole = free == size
            whole_any_time = int(size[whole & (open_ | (c.extra[ix] >= size))].sum())
            reserved_whole = whole & ~open_
            latest_whole = shadow[reserved_whole].max() if _any(reserved_whole) else -INF
            whole_room = whole_any_time + np.where(
                e <= latest_whole, int(size[reserved_whole].sum()), 0
            )
            result[mine] = np.where(single, fits, g <= whole_room)
            # what would fit were it not for the reservations: those jobs wait for them
            roomy[mine] = np.where(single, g <= free.max(), g <= int(size[whole].sum()))
        return result, roomy & ~result

    def _fit(
        self, c: _Cycle, gpus: int, model: int, end: float
    ) -> tuple[list[tuple[int, int]] | None, str]:
        """Where a job could start now without delaying a reservation, or why it cannot."""
        ix = self.nodes_of_model[model]
        free = c.free[ix]
        size = self.node_size[ix]
        single = gpus <= self.model_max_node[model]
        room = free >= gpus if single else free == size
        if not _any(room):
            if single:
                return None, f"no {self._model(model)} node has {gpus} free GPUs"
            return None, f"not enough whole free {self._model(model)} nodes"
        need = gpus if single else size
        allowed = room & ((end <= c.shadow[ix]) | (need <= c.extra[ix]))
        if not _any(allowed):
            return None, "starting now would delay a higher-priority job's reserved start"
        if single:
            pick = int(np.where(allowed, free, np.iinfo(np.int64).max).argmin())  # best fit
            return [(int(ix[pick]), gpus)], ""
        chosen = allowed.nonzero()[0][: gpus // int(size[0])]
        if len(chosen) * int(size[0]) < gpus:
            return None, "starting now would delay a higher-priority job's reserved start"
        return [(int(ix[k]), int(size[k])) for k in chosen], ""

    def _take(
        self,
        c: _Cycle,
        job_id: int,
        project_code: int,
        gpus: int,
        end: float,
        parts: list[tuple[int, int]],
    ) -> Placement:
        nodes = []
        for i, count in parts:
            slots = self._slots(c, i, count)
            c.free[i] -= count
            if end > c.shadow[i]:
                c.extra[i] -= count
            c.new_releases.setdefault(i, []).append((end, count))
            spec = self.specs[i]
            nodes.append(NodeGpus(spec.name, tuple(spec.physical(s) for s in slots)))
        c.project_gpus[project_code] += gpus
        borrowed = bool(
            self.config.borrowing and c.project_gpus[project_code] > c.guarantee[project_code]
        )
        return Placement(job_id=job_id, nodes=tuple(nodes), borrowed=borrowed)

    def _slots(self, c: _Cycle, i: int, count: int) -> list[int]:
        taken = c.taken.setdefault(i, [])
        available = sorted((set(self.free_slots[i]) | set(c.freed.get(i, ()))) - set(taken))
        slots = available[:count]
        assert len(slots) == count, "the cycle's free count and slots disagree"
        taken.extend(slots)
        return slots

    def _model(self, code: int) -> str:
        return self.model_name[code]

    # -- reservations ------------------------------------------------------------------------

    def _profile(self, c: _Cycle, i: int) -> list[tuple[float, int]]:
        """(time, GPUs freed) on node i, soonest first: running jobs' limits and this cycle's."""
        if c.preempted:
            events = [(end, n) for end, job_id, n in self.releases[i] if job_id not in c.preempted]
        else:
            events = [(end, n) for end, _, n in self.releases[i]]
        extra = c.new_releases.get(i)
        if extra:
            events.extend(extra)
            events.sort()
        return events

    def _earliest(self, c: _Cycle, i: int, need: int) -> tuple[float, int]:
        """When node i will have `need` GPUs not claimed by reservations, and how many then."""
        available = int(c.free[i]) - int(c.claimed[i])
        if available >= need:
            return c.now, available
        if c.preempted or i in c.new_releases:
            events: Iterable[tuple[float, int]] = self._profile(c, i)
        else:  # the common case: the running jobs' own release times, already sorted
            events = ((end, n) for end, _, n in self.releases[i])
        for end, count in events:
            available += count
            if available >= need:
                return max(end, c.now), available
        return INF, available

    def _reserve(
        self, c: _Cycle, job_id: int, gpus: int, model: int, limit: float
    ) -> Reservation | None:
        ix = self.nodes_of_model[model]
        single = gpus <= self.model_max_node[model]
        if single:
            # a node cannot be ready before its first release (or now, if it has room):
            # visit nodes by that bound and stop once no node can beat the best found
            room = (c.free[ix] - c.claimed[ix]) >= gpus
            first = self.first_end[ix]
            if c.new_releases:  # this cycle's starts release GPUs too
                first = first.copy()
                for node, ends in c.new_releases.items():
                    if self.node_model[node] == model:
                        k = self.model_position[node]
                        first[k] = min(first[k], min(end for end, _ in ends))
            bound = np.where(room, c.now, np.maximum(first, c.now))
            if c.preempted:
                bound = np.full(len(ix), c.now)  # preemptions changed the profiles: visit all
            visit = np.lexsort((ix, bound))
            best: tuple[float, int, int] = (INF, -1, 0)
            for k in visit.tolist():
                i, lower = int(ix[k]), float(bound[k])
                if lower == INF or (lower, i) > best[:2]:
                    break
                when, available = self._earliest(c, i, gpus)
                if (when, i) < best[:2]:
                    best = (when, i, available)
            when, node, available = best
            if when == INF:
                return None
            chosen = [(node, gpus, available)]
        else:
            whole: list[tuple[float, int, int]] = []
            sizes = self.node_size[ix]
            if c.preempted or c.new_releases:
                for i in ix.tolist():
                    if not c.claimed[i]:
                        when, available = self._earliest(c, i, int(self.node_size[i]))
                        whole.append((when, i, available))
            else:  # a node is whole again when its last running job reaches its limit
                ready = np.where(c.free[ix] == sizes, c.now, np.maximum(self.last_end[ix], c.now))
                usable = c.claimed[ix] == 0
                for k in np.flatnonzero(usable).tolist():
                    whole.append((float(ready[k]), int(ix[k]), int(sizes[k])))
            whole.sort()
            k = gpus // int(self.node_size[ix[0]])
            if len(whole) < k or whole[k - 1][0] == INF:
                return None
            when = whole[k - 1][0]
            chosen = [(i, int(self.node_size[i]), available) for _, i, available in whole[:k]]
        for i, need, _ in chosen:
            at_start = self._available_at(c, i, when)
            spare = at_start - need
            c.extra[i] = spare if c.shadow[i] == INF else min(int(c.extra[i]), spare)
            c.shadow[i] = min(float(c.shadow[i]), when)
            c.claimed[i] += need
        names = tuple(self.specs[i].name for i, _, _ in chosen)
        return Reservation(job_id=job_id, start_at=float(when), nodes=names)

    def _available_at(self, c: _Cycle, i: int, when: float) -> int:
        available = int(c.free[i]) - int(c.claimed[i])
        for end, count in self._profile(c, i):
            if end > when:
                break
            available += count
        return available

    # -- preemption --------------------------------------------------------------------------

    def _reclaim_candidates(self, c: _Cycle, ranking: _Ranking | None, head: IntArray) -> list[int]:
        """Slots of the first few pending jobs, in order, that fit within their project's
        guarantee: those that may reclaim borrowed GPUs."""
        q, attempts = self.queue, self.config.preemption_attempts
        if ranking is not None and ranking.owners_first and attempts <= len(head):
            # owners come first in this order, so the first few owners lead the head
            first = ranking.slots[head[:attempts]]
            within = c.project_gpus[q.project[first]] + q.gpus[first]
            result: list[int] = first[within <= c.guarantee[q.project[first]]].tolist()
            return result
        slots = q.live_slots() if ranking is None else ranking.slots
        projects = q.project[slots]
        under = (c.project_gpus[projects] + q.gpus[slots] <= c.guarantee[projects]).nonzero()[0]
        if ranking is None:  # order just these jobs: their keys are those of the whole queue
            owners = slots[under]
            result = owners[self._ranking(c.now, slots=owners).first(attempts)].tolist()
            return result
        result = slots[ranking.first(attempts, among=under)].tolist()
        return result

    def _reclaim(
        self, c: _Cycle, candidates: list[int], reasons: dict[int, str]
    ) -> list[Placement]:
        """Jobs of projects under their guarantee take GPUs back from borrowed jobs."""
        q = self.queue
        placements: list[Placement] = []
        for s in candidates:
            job_id, gpus, model = int(q.ids[s]), int(q.gpus[s]), int(q.model[s])
            project = int(q.project[s])
            if c.project_gpus[project] + gpus > c.guarantee[project]:
                continue  # earlier reclaims this cycle brought the project to its guarantee
            end = c.now + float(q.limit[s])
            parts = self._fit(c, gpus, model, end)[0]
            if parts is not None:
                if c.preempted:  # room an earlier reclaim freed: it is for the owners
                    placements.append(self._take(c, job_id, project, gpus, end, parts))
                    reasons[job_id] = "reclaimed its guaranteed share by preemption"
                continue  # otherwise it fits anyway; the walk starts it in its turn
            victims = self._victims(c, int(q.project[s]), gpus, model)
            if victims is None:
                continue
            c.lendable = None  # these victims lend no more
            for run in victims:
                c.preempted.add(run.job.job_id)
                c.project_gpus[run.project_code] -= run.gpus
                for i, lent in run.nodes:
                    c.free[i] += len(lent)
                    c.freed.setdefault(i, []).extend(lent)
            parts, _ = self._fit(c, gpus, model, end)
            assert parts is not None, "preemption freed room that the fit does not see"
            placement = self._take(c, job_id, int(q.project[s]), gpus, end, parts)
            placements.append(placement)
            reasons[job_id] = "reclaimed its guaranteed share by preemption"
        return placements

    def _lendable(
        self, now: float, project_gpus: IntArray, guarantee: FloatArray, preempted: set[int]
    ) -> IntArray:
        """GPUs per node of borrowed jobs past their minimum run whose projects still use more
        than their guarantee: what preemption could free for some requester, at most."""
        cutoff = now - self.config.min_runtime_s
        over = project_gpus > guarantee
        lendable = np.zeros(len(self.specs), np.int64)
        for job_id, run in self.borrowed_runs.items():
            if run.start <= cutoff and over[run.project_code] and job_id not in preempted:
                for i, slots in run.nodes:
                    lendable[i] += len(slots)
        return lendable

    def _victims(
        self, c: _Cycle, project_code: int, gpus: int, model: int
    ) -> list[RunningJob] | None:
        """The fewest, most recently started borrowed jobs whose GPUs let the job fit."""
        cutoff = c.now - self.config.min_runtime_s
        if c.lendable is None:
            c.lendable = self._lendable(c.now, c.project_gpus, c.guarantee, c.preempted)
        lendable = c.lendable

        def eligible(run: RunningJob) -> bool:
            # as Kueue's reclaim: only a project still using more than its guarantee gives
            # GPUs back, so a project is never pushed under its share by a stale borrowed mark
            return (
                run.borrowed
                and run.start <= cutoff
                and run.project_code != project_code
                and run.job.job_id not in c.preempted
                and c.project_gpus[run.project_code] > c.guarantee[run.project_code]
            )

        ix = self.nodes_of_model[model]
        # a node can help only if its free GPUs and those it could give back reach the request
        reach = c.free[ix] + lendable[ix]
        if gpus <= self.model_max_node[model]:
            best: tuple[int, float, int, list[RunningJob]] | None = None
            for i in ix[reach >= gpus].tolist():
                free = int(c.free[i])
                picked: list[RunningJob] = []
                runs = sorted(
                    (r for r in self.lent_on_node[i].values() if eligible(r)),
                    key=lambda r: (-r.start, r.job.job_id),
                )
                for run in runs:
                    if free >= gpus:
                        break
                    picked.append(run)
                    free += run.gpus_on(i)
                if free >= gpus and picked:
                    option = (len(picked), -picked[-1].start, i, picked)
                    if best is None or option[:3] < best[:3]:
                        best = option
            return None if best is None else best[3]
        # whole nodes: every job on the node must be an eligible victim, and GPUs an earlier
        # reclaim in this cycle handed out there are not freed by preempting anyone
        options: list[tuple[int, int, list[RunningJob]]] = []
        for i in ix[reach >= self.node_size[ix]].tolist():
            if c.taken.get(i):
                continue
            runs = [r for r in self.on_node[i].values() if r.job.job_id not in c.preempted]
            if all(eligible(r) for r in runs):
                options.append((len(runs), i, runs))
        k = gpus // int(self.model_max_node[model])
        if len(options) < k:
            return None
        options.sort(key=lambda o: (o[0], o[1]))
        victims: dict[int, RunningJob] = {}
        for _, _, runs in options[:k]:
            for run in runs:
                victims[run.job.job_id] = run
        # a multi-node victim frees GPUs elsewhere too; that is fine, never too few
        return list(victims.values()) or None

    # -- explanation -------------------------------------------------------------------------

    def explain(self, job_id: int, now: float) -> Explanation:
        run = self.running.get(job_id)
        if run is not None:
            where = ", ".join(
                f"{self.specs[i].name}[{','.join(str(self.specs[i].physical(s)) for s in slots)}]"
                for i, slots in run.nodes
            )
            kind = " on borrowed GPUs (preemptible)" if run.borrowed else ""
            return Explanation(job_id, "running", None, None, f"running on {where}{kind}")
        slot = self.queue.slot_of.get(job_id)
        if slot is None:
            return Explanation(job_id, "unknown", None, None, "not pending or running here")
        q = self.queue
        ranking = self._ranking(now)
        slots = ranking.slots
        age, fs, size, qos, priority = self._factors(slots, now)
        k = int(np.flatnonzero(slots == slot)[0])
        p = priority[k]
        # jobs whose sort keys, most significant first, compare below this job's
        ahead_mask = np.zeros(len(slots), np.bool_)
        equal = np.ones(len(slots), np.bool_)
        assert ranking.keys is not None
        for key in reversed(ranking.keys):
            ahead_mask |= equal & (key < key[k])
            equal &= key == key[k]
        ahead = np.count_nonzero(ahead_mask)
        factors = PriorityFactors(
            float(age[k]), float(fs[k]), float(size[k]), float(qos[k]), float(p)
        )
        reservation = self.last_reservations.get(job_id)
        if reservation is not None:
            return Explanation(
                job_id,
                "pending",
                int(ahead) + 1,
                factors,
                "blocked, with a reserved start: lower-priority jobs may only use GPUs "
                "they give back before then",
                reservation.start_at,
                reservation.nodes,
            )
        reason = self.last_reasons.get(job_id)
        gpus, code = int(q.gpus[slot]), int(q.model[slot])
        if reason is None and bool(np.any(self._held_by_reservation == job_id)):
            reason = "starting now would delay a higher-priority job's reserved start"
        if reason is None:
            reason = (
                f"waiting for {gpus} {self._model(code)} GPUs: all are busy or held for "
                f"{int(ahead)} higher-priority jobs"
            )
            project = int(q.project[slot])
            if self.config.borrowing and (
                self.project_gpus[project] + gpus > self._guarantee()[project]
            ):
                reason += (
                    " (beyond its project's guaranteed share, it goes after jobs within theirs)"
                )
        return Explanation(job_id, "pending", int(ahead) + 1, factors, reason)


def node_specs(items: Iterable[tuple[str, str, int]]) -> list[NodeSpec]:
    return [NodeSpec(name, model, gpus) for name, model, gpus in items]
