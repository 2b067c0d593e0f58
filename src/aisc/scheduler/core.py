"""The policy core: multifactor priority, fair share, EASY backfill, borrowing with preemption and
GPU placement, over incrementally kept state. Pure: no I/O, no clock but the `now` it is given.

A driver (the live controller or the simulator) tells it what happens, `submit`, `cancel`,
`started`, `finished`, `preempted`, and asks `cycle(now)` what to do next. `cycle` does not change
the scheduler's state; the driver confirms each start with `started` and each preemption with
`preempted`, so a start the driver cannot carry out (the allocation is over quota, say) leaves
the job pending.

One cycle, in steps:
 1. order: priority of every pending job as one vector operation, then a stable sort
    (priority, then submit time, then job id, so the same input gives the same order);
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
from dataclasses import dataclass

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
CHUNK = 2048

__all__ = ["Scheduler", "Unschedulable"]


@dataclass
class RunningJob:
    job: PendingJob
    project_code: int
    start: float
    end: float  # start + time limit: when its GPUs are surely free again
    nodes: tuple[tuple[int, tuple[int, ...]], ...]  # (node index, local GPU slots)
    borrowed: bool

    @property
    def gpus(self) -> int:
        return sum(len(slots) for _, slots in self.nodes)

    def gpus_on(self, node: int) -> int:
        return sum(len(slots) for i, slots in self.nodes if i == node)


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
        self.model_total = np.array([self.node_size[ix].sum() for ix in self.nodes_of_model])
        self.model_max_node = np.array([self.node_size[ix].max() for ix in self.nodes_of_model])
        self.total_gpus = int(self.node_size.sum())
        self.free = self.node_size.copy()
        self.free_slots: list[list[int]] = [list(range(n.gpus)) for n in ordered]
        # per node, (end, job id) of running jobs, sorted: the release profile for reservations
        self.releases: list[list[tuple[float, int]]] = [[] for _ in ordered]
        self.queue = PendingQueue()
        self.fairshare = FairShare(self.config.usage_half_life_s)
        self.running: dict[int, RunningJob] = {}
        self.project_gpus: IntArray = np.zeros(0, np.int64)
        self.last_reasons: dict[int, str] = {}
        self.last_reservations: dict[int, Reservation] = {}

    # -- what the driver tells the scheduler ---------------------------------------------------

    def check(self, gpus: int, gpu_model: str) -> None:
        """Raise Unschedulable, with the reason, for a request this cluster can never run."""
        check_request(self.specs, gpus, gpu_model)

    def submit(self, job: PendingJob) -> None:
        if job.job_id in self.running:
            raise ValueError(f"job {job.job_id} is already running")
        self.check(job.gpus, job.gpu_model)
        code = self.fairshare.code(job.project)
        self._grow_projects()
        self.queue.add(job, code, self.model_code[job.gpu_model])

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
            bisect.insort(self.releases[i], (start + job.time_limit_s, job.job_id))
        run = RunningJob(
            job, code, start, start + job.time_limit_s, tuple(nodes), placement.borrowed
        )
        self.running[job.job_id] = run
        self.project_gpus[code] += run.gpus

    def finished(self, job_id: int, now: float) -> None:
        run = self._release(job_id, now)
        if run is None:
            raise ValueError(f"job {job_id} is not running")

    def preempted(self, job_id: int, now: float) -> None:
        """A running job was stopped to reclaim its GPUs: it waits again, as submitted."""
        run = self._release(job_id, now)
        if run is None:
            raise ValueError(f"job {job_id} is not running")
        self.queue.add(run.job, run.project_code, self.model_code[run.job.gpu_model])

    def _release(self, job_id: int, now: float) -> RunningJob | None:
        run = self.running.pop(job_id, None)
        if run is None:
            return None
        for i, slots in run.nodes:
            for slot in slots:
                bisect.insort(self.free_slots[i], slot)
            self.free[i] += len(slots)
            entry = (run.end, job_id)
            k = bisect.bisect_left(self.releases[i], entry)
            if k < len(self.releases[i]) and self.releases[i][k] == entry:
                del self.releases[i][k]
        self.project_gpus[run.project_code] -= run.gpus
        self.fairshare.add_usage(run.job.project, run.gpus * max(0.0, now - run.start), now)
        return run

    def _grow_projects(self) -> None:
        missing = self.fairshare.size - len(self.project_gpus)
        if missing > 0:
            self.project_gpus = np.append(self.project_gpus, np.zeros(missing, np.int64))

    # -- priority ----------------------------------------------------------------------------

    def _factors(self, slots: IntArray, now: float) -> tuple[FloatArray, ...]:
        q, cfg = self.queue, self.config
        age = np.clip((now - q.submit[slots]) / cfg.max_age_s, 0.0, 1.0)
        fs_all = self.fairshare.factors(now, self._running_usage(now))
        fairshare = fs_all[q.project[slots]]
        size = q.gpus[slots] / self.total_gpus
        if cfg.favor_small:
            size = 1.0 - size
        qos = q.qos[slots]
        w = cfg.weights
        priority = w.age * age + w.fairshare * fairshare + w.size * size + w.qos * qos
        return age, fairshare, size, qos, priority

    def _running_usage(self, now: float) -> FloatArray:
        usage = np.zeros(self.fairshare.size)
        for run in self.running.values():
            usage[run.project_code] += run.gpus * max(0.0, now - run.start)
        return usage

    def _order(self, now: float) -> tuple[IntArray, FloatArray | None]:
        q = self.queue
        slots = q.live_slots()
        if self.config.ordering == "fifo":
            keys = (q.ids[slots], q.submit[slots])
            return slots[np.lexsort(keys)], None
        priority = self._factors(slots, now)[-1]
        return slots[np.lexsort((q.ids[slots], q.submit[slots], -priority))], priority

    def ordered_ids(self, now: float) -> list[int]:
        """Pending job ids in the order the next cycle will consider them."""
        order, _ = self._order(now)
        return [int(i) for i in self.queue.ids[order]]

    def order_by_key(self, now: float) -> IntArray:
        """Pending slots ordered by each job's sort_key (the simulator's SRTF oracle)."""
        q = self.queue
        slots = q.live_slots()
        return slots[np.lexsort((q.ids[slots], q.submit[slots], q.key[slots]))]

    def _guarantee(self) -> FloatArray:
        shares = self.fairshare.normalised_shares()
        return np.floor(shares * self.total_gpus)

    # -- the cycle ---------------------------------------------------------------------------

    def cycle(self, now: float, order: IntArray | None = None) -> CycleResult:
        cfg = self.config
        if order is None:
            order, _ = self._order(now)
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
        if cfg.borrowing and cfg.preemption and any(r.borrowed for r in self.running.values()):
            for placement in self._reclaim(c, order, reasons):
                starts.append(placement)
                done.add(placement.job_id)
        q = self.queue
        reservations_left = cfg.reservations if cfg.backfill else 0
        pos = 0
        stop = False
        while pos < len(order) and not stop:
            chunk = order[pos : pos + CHUNK]
            pos += CHUNK
            if reservations_left == 0:
                if int(c.free.sum()) == 0:
                    break
                if cfg.backfill:  # in strict order a job that cannot fit must stop the walk
                    chunk = chunk[self._could_fit(c, chunk)]
            for s in chunk.tolist():
                job_id = int(q.ids[s])
                if job_id in done:
                    continue
                gpus, model = int(q.gpus[s]), int(q.model[s])
                end = now + float(q.limit[s])
                parts, why = self._fit(c, gpus, model, end)
                if parts is not None:
                    starts.append(self._take(c, job_id, int(q.project[s]), gpus, end, parts))
                    continue
                if not cfg.backfill:
                    reasons[job_id] = why
                    stop = True  # strict order: the first job that cannot start holds the rest
                    break
                if reservations_left > 0:
                    reservation = self._reserve(c, job_id, gpus, model, float(q.limit[s]))
                    if reservation is not None:
                        reservations.append(reservation)
                        reasons[job_id] = "reserved"
                        reservations_left -= 1
                        continue
                reasons[job_id] = why
            if reservations_left == 0 and int(c.free.sum()) == 0:
                break
        self.last_reasons = reasons
        self.last_reservations = {r.job_id: r for r in reservations}
        return CycleResult(
            starts=starts,
            preemptions=sorted(c.preempted),
            reservations=reservations,
            pending=len(order),
        )

    def _could_fit(self, c: _Cycle, chunk: IntArray) -> npt.NDArray[np.bool_]:
        """An upper bound, in one vector pass: False where a job surely cannot start now.

        Per model: the largest free block on nodes without reservations; on reserved nodes,
        the largest block usable past the reserved start (`extra`), and for each job size the
        latest reserved start among nodes with that much free (a job ending before it fits).
        """
        q = self.queue
        gpus, model = q.gpus[chunk], q.model[chunk]
        ends = c.now + q.limit[chunk]
        result = np.zeros(len(chunk), np.bool_)
        for code, ix in enumerate(self.nodes_of_model):
            mine = model == code
            if not mine.any():
                continue
            free, size, shadow = c.free[ix], self.node_size[ix], c.shadow[ix]
            open_ = shadow == INF
            usable = np.where(open_, free, np.minimum(free, c.extra[ix]))
            largest = int(self.model_max_node[code])
            g, e = gpus[mine], ends[mine]
            fits = g <= usable.max()
            # a job that ends before a reservation may use that node's free GPUs
            latest = np.full(largest + 1, -INF)
            for need in range(1, largest + 1):
                has = (~open_) & (free >= need)
                if has.any():
                    latest[need] = shadow[has].max()
            single = g <= largest
            fits |= single & (e <= latest[np.minimum(g, largest)])
            whole = free == size
            whole_any_time = int(size[whole & (open_ | (c.extra[ix] >= size))].sum())
            reserved_whole = whole & ~open_
            latest_whole = shadow[reserved_whole].max() if reserved_whole.any() else -INF
            whole_room = whole_any_time + np.where(
                e <= latest_whole, int(size[reserved_whole].sum()), 0
            )
            result[mine] = np.where(single, fits, g <= whole_room)
        return result

    def _fit(
        self, c: _Cycle, gpus: int, model: int, end: float
    ) -> tuple[list[tuple[int, int]] | None, str]:
        """Where a job could start now without delaying a reservation, or why it cannot."""
        ix = self.nodes_of_model[model]
        free = c.free[ix]
        size = self.node_size[ix]
        single = gpus <= self.model_max_node[model]
        room = free >= gpus if single else free == size
        if not room.any():
            if single:
                return None, f"no {self._model(model)} node has {gpus} free GPUs"
            return None, f"not enough whole free {self._model(model)} nodes"
        need = gpus if single else size
        allowed = room & ((end <= c.shadow[ix]) | (need <= c.extra[ix]))
        if not allowed.any():
            return None, "starting now would delay a higher-priority job's reserved start"
        if single:
            pick = int(np.where(allowed, free, np.iinfo(np.int64).max).argmin())  # best fit
            return [(int(ix[pick]), gpus)], ""
        chosen = np.flatnonzero(allowed)[: gpus // int(size[0])]
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
        for name, value in self.model_code.items():
            if value == code:
                return name
        return "?"

    # -- reservations ------------------------------------------------------------------------

    def _profile(self, c: _Cycle, i: int) -> list[tuple[float, int]]:
        """(time, GPUs freed) on node i, soonest first: running jobs' limits and this cycle's."""
        events = [
            (end, self.running[job_id].gpus_on(i))
            for end, job_id in self.releases[i]
            if job_id not in c.preempted
        ]
        events.extend(c.new_releases.get(i, ()))
        events.sort()
        return events

    def _earliest(self, c: _Cycle, i: int, need: int) -> tuple[float, int]:
        """When node i will have `need` GPUs not claimed by reservations, and how many then."""
        available = int(c.free[i]) - int(c.claimed[i])
        if available >= need:
            return c.now, available
        for end, count in self._profile(c, i):
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
            best = min(
                ((self._earliest(c, int(i), gpus), int(i)) for i in ix),
                key=lambda x: (x[0][0], x[1]),
            )
            (when, available), node = best
            if when == INF:
                return None
            chosen = [(node, gpus, available)]
        else:
            whole: list[tuple[float, int, int]] = []
            for i in ix.tolist():
                if c.claimed[i]:
                    continue
                when, available = self._earliest(c, i, int(self.node_size[i]))
                whole.append((when, i, available))
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

    def _reclaim(self, c: _Cycle, order: IntArray, reasons: dict[int, str]) -> list[Placement]:
        """Jobs of projects under their guarantee take GPUs back from borrowed jobs."""
        q, cfg = self.queue, self.config
        if len(order) == 0:
            return []
        projects = q.project[order]
        under = c.project_gpus[projects] + q.gpus[order] <= c.guarantee[projects]
        placements: list[Placement] = []
        for s in order[under][: cfg.preemption_attempts].tolist():
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
            for run in victims:
                c.preempted.add(run.job.job_id)
                c.project_gpus[run.project_code] -= run.gpus
                for i, slots in run.nodes:
                    c.free[i] += len(slots)
                    c.freed.setdefault(i, []).extend(slots)
            parts, _ = self._fit(c, gpus, model, end)
            assert parts is not None, "preemption freed room that the fit does not see"
            placement = self._take(c, job_id, int(q.project[s]), gpus, end, parts)
            placements.append(placement)
            reasons[job_id] = "reclaimed its guaranteed share by preemption"
        return placements

    def _victims(
        self, c: _Cycle, project_code: int, gpus: int, model: int
    ) -> list[RunningJob] | None:
        """The fewest, most recently started borrowed jobs whose GPUs let the job fit."""
        cutoff = c.now - self.config.min_runtime_s
        by_node: dict[int, list[RunningJob]] = {}
        blocked_nodes: set[int] = set()
        for run in self.running.values():
            if run.job.job_id in c.preempted:
                continue
            eligible = run.borrowed and run.start <= cutoff and run.project_code != project_code
            for i, _ in run.nodes:
                if self.node_model[i] != model:
                    continue
                if eligible:
                    by_node.setdefault(i, []).append(run)
                else:
                    blocked_nodes.add(i)
        # GPUs an earlier reclaim in this cycle handed out are not freed by preempting anyone
        blocked_nodes.update(i for i, slots in c.taken.items() if slots)
        single = gpus <= self.model_max_node[model]
        options: list[tuple[int, float, int, list[RunningJob]]] = []
        for i in self.nodes_of_model[model].tolist():
            candidates = sorted(by_node.get(i, []), key=lambda r: (-r.start, r.job.job_id))
            if single:
                free = int(c.free[i])
                picked: list[RunningJob] = []
                for run in candidates:
                    if free >= gpus:
                        break
                    picked.append(run)
                    free += run.gpus_on(i)
                if free >= gpus and picked:
                    options.append((len(picked), -picked[-1].start, i, picked))
            elif i not in blocked_nodes:
                options.append((len(candidates), 0.0, i, candidates))
        if single:
            if not options:
                return None
            return min(options, key=lambda o: (o[0], o[1], o[2]))[3]
        k = gpus // int(self.model_max_node[model])
        options.sort(key=lambda o: (o[0], o[2]))
        if len(options) < k:
            return None
        victims: dict[int, RunningJob] = {}
        for _, _, _, runs in options[:k]:
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
        slots = q.live_slots()
        age, fs, size, qos, priority = self._factors(slots, now)
        k = int(np.flatnonzero(slots == slot)[0])
        p = priority[k]
        if self.config.ordering == "fifo":
            ahead = np.count_nonzero(
                (q.submit[slots] < q.submit[slot])
                | ((q.submit[slots] == q.submit[slot]) & (q.ids[slots] < job_id))
            )
        else:
            ahead = np.count_nonzero(
                (priority > p)
                | ((priority == p) & (q.submit[slots] < q.submit[slot]))
                | ((priority == p) & (q.submit[slots] == q.submit[slot]) & (q.ids[slots] < job_id))
            )
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
        if reason is None:
            gpus, model = int(q.gpus[slot]), self._model(int(q.model[slot]))
            reason = (
                f"waiting for {gpus} {model} GPUs: all are busy or held for "
                f"{int(ahead)} higher-priority jobs"
            )
        return Explanation(job_id, "pending", int(ahead) + 1, factors, reason)


def node_specs(items: Iterable[tuple[str, str, int]]) -> list[NodeSpec]:
    return [NodeSpec(name, model, gpus) for name, model, gpus in items]
