"""How fast the ledger posts job reservations and settlements, and verifies them afterwards.

Each job is two database transactions, as in production: a reservation at start and a
settlement at the end, each under the ledger's lock, balance-checked and hash-chained.

    python benchmarks/settle_throughput.py [--jobs 2000]

Uses a throwaway SQLite file, or, when AISC_DATABASE_URL names a PostgreSQL server, a throwaway
database created (and dropped) on it. Prints one line:
    database=sqlite jobs=2000 reserve_per_s=... settle_per_s=... verify_s=...
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_centre import (  # benchmarks/, beside this script
    open_database,
    seed_centre,
    throwaway_database,
)
from sqlalchemy import select

from aisc.domain.model import JobState
from aisc.services.audit import verify_ledger
from aisc.services.context import SYSTEM
from aisc.services.metering import reserve_job, settle_job
from aisc.store.tables import Allocation, Job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    url, drop = throwaway_database(
        os.environ.get("AISC_DATABASE_URL"), Path(tempfile.mkdtemp(prefix="aisc-bench-"))
    )
    try:
        engine, new_uow = open_database(url)
        allocation_id, user_id, _ = seed_centre(new_uow)
        now = datetime.now(UTC)
        with new_uow() as uow:
            uow.session.add_all(
                Job(
                    allocation_id=allocation_id,
                    user_id=user_id,
                    name=f"j{i}",
                    argv=["true"],
                    gpus=1 + i % 8,
                    gpu_model="H800",
                    time_limit_s=3600,
                    state="queued",
                    submitted_at=now,
                )
                for i in range(args.jobs)
            )
            uow.commit()
            ids = list(uow.session.scalars(select(Job.id).order_by(Job.id)))
        t0 = time.perf_counter()
        for job_id in ids:
            with new_uow() as uow:
                uow.ledger.lock()
                job = uow.session.get(Job, job_id)
                allocation = uow.session.get(Allocation, allocation_id)
                assert job is not None and allocation is not None
                reserve_job(uow, job, allocation, now)
                job.state, job.started_at = JobState.RUNNING.value, now
                uow.commit()
        t1 = time.perf_counter()
        for n, job_id in enumerate(ids):
            with new_uow() as uow:
                uow.ledger.lock()
                job = uow.session.get(Job, job_id)
                allocation = uow.session.get(Allocation, allocation_id)
                assert job is not None and allocation is not None
                settle_job(uow, job, allocation, now + timedelta(seconds=60 + n % 3000))
                job.state = JobState.COMPLETED.value
                uow.commit()
        t2 = time.perf_counter()
        report = verify_ledger(new_uow(), SYSTEM)
        t3 = time.perf_counter()
        assert report.ok, report.summary()
        print(
            f"database={engine.dialect.name} jobs={args.jobs} "
            f"reserve_per_s={args.jobs / (t1 - t0):.0f} settle_per_s={args.jobs / (t2 - t1):.0f} "
            f"verify_s={t3 - t2:.2f} transactions={report.transactions}"
        )
        engine.dispose()
    finally:
        drop()


if __name__ == "__main__":
    main()
