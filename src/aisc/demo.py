"""The demo centre: seeds a scheme, organisations, reviews and awards through the real services,
then runs real jobs through the controller and reports the money. `aisc demo` calls `run_demo`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from aisc.domain.errors import DomainError
from aisc.domain.model import JobState
from aisc.runtime import Runtime
from aisc.services import (
    accounts,
    applications,
    decisions,
    jobs,
    rates,
    reviews,
    schemes,
    sessions,
)
from aisc.services.applications import ApplicationRequest, GovernanceAssessment
from aisc.services.context import SYSTEM, Actor

RUBRIC = {
    "Alignment with Hong Kong's I&T and AI needs": 25,
    "Reasonableness of the compute request": 20,
    "Technical merit": 25,
    "Team capability": 15,
    "Impact and commercialisation": 15,
}
H800_CENTS_PER_GPU_HOUR = 3000  # HK$30.00 list price
FUND_CENTS = 3_000_000_000_00  # HK$3,000,000,000


@dataclass
class DemoCentre:
    scheme_id: int
    operator: Actor
    funder: Actor
    reviewers: dict[str, Actor]
    applicants: dict[str, Actor]
    allocations: dict[str, int]
    tokens: dict[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Org:
    key: str
    name: str
    category: str
    sector: str
    lead: str
    email: str


ORGS = [
    Org(
        "hu",
        "Harbour University",
        "university",
        "education",
        "Dr Mei Chan",
        "mei.chan@harbour-u.example",
    ),
    Org(
        "kiar",
        "Kowloon Institute for AI Research",
        "research_institute",
        "healthcare",
        "Prof Kin Lee",
        "kin.lee@kiar.example",
    ),
    Org(
        "lantern",
        "Lantern Robotics Ltd",
        "startup",
        "robotics",
        "Ms Ada Wong",
        "ada@lantern.example",
    ),
    Org(
        "vhf",
        "Victoria Harbour Fintech Ltd",
        "enterprise",
        "finance",
        "Mr Sam Ho",
        "sam.ho@vhf.example",
    ),
]


# every demo user signs in to the portal with this; the demo's database is thrown away each run
DEMO_PASSWORD = "demo-password"


def seed(runtime: Runtime, today: date | None = None) -> DemoCentre:
    """Everything before the first job: people, the scheme, the rate card, applications,
    reviews (with one conflict refused) and decisions (with one rejection)."""
    uow = runtime.uow
    today = today or datetime.now(UTC).date()
    events: list[str] = []
    operator = accounts.actor_for(
        accounts.create_user(uow(), SYSTEM, "Olivia Tsang", "operator@aisc.example", "operator")
    )
    funder = accounts.actor_for(
        accounts.create_user(uow(), operator, "Fund Auditor", "auditor@itc.example", "funder")
    )
    scheme = schemes.create_scheme(
        uow(),
        operator,
        "AI Subsidy Scheme",
        FUND_CENTS,
        date(today.year, 1, 1),
        date(today.year + 3, 12, 31),
        RUBRIC,
        eligible_categories=["university", "research_institute", "startup", "enterprise"],
        min_reviews=2,
    )
    events.append(f"scheme '{scheme.name}' funded with HK$3,000,000,000 at 70% (max 90%)")
    rates.set_rate(uow(), operator, "H800", H800_CENTS_PER_GPU_HOUR)
    rates.set_rate(
        uow(), operator, "H800", 2800, datetime(today.year + 1, 1, 1, tzinfo=UTC)
    )  # a scheduled price cut, to show effective dates
    applicants: dict[str, Actor] = {}
    for org in ORGS:
        row = accounts.create_organisation(uow(), operator, org.name, org.category, org.sector)
        applicants[org.key] = accounts.actor_for(
            accounts.create_user(uow(), operator, org.lead, org.email, "applicant", row.id)
        )
    reviewers = {
        "ng": accounts.actor_for(
            accounts.create_user(uow(), operator, "Prof Ada Ng", "ada.ng@panel.example", "reviewer")
        ),
        "yip": accounts.actor_for(
            accounts.create_user(uow(), operator, "Dr Ben Yip", "ben.yip@panel.example", "reviewer")
        ),
        "lau": accounts.actor_for(
            accounts.create_user(
                uow(),
                operator,
                "Dr Carmen Lau",
                "carmen.lau@harbour-u.example",
                "reviewer",
                applicants["hu"].org_id,
            )
        ),
    }
    requests = {
        "hu": (
            "Cantonese-English speech foundation model",
            50_000,
            "Pre-train a 3B-parameter speech model on 80,000 hours of Cantonese and English "
            "audio in bf16, global batch 1,024, about 40 days on 64 GPUs.",
        ),
        "kiar": (
            "Medical imaging foundation model for Hong Kong hospitals",
            120_000,
            "Train a 1.5B vision transformer on 4 million de-identified scans, fp8 mixed "
            "precision, then evaluate on 12 diagnostic tasks.",
        ),
        "lantern": (
            "Warehouse robot grasping policy (pilot)",
            4,
            "Fine-tune a 300M vision-language-action policy on 20,000 teleoperated "
            "episodes; a pilot before a full application.",
        ),
        "vhf": (
            "Credit scoring language model",
            30_000,
            "Fine-tune a 13B model on loan application text to predict default risk.",
        ),
    }
    apps: dict[str, int] = {}
    for key, (title, hours, justification) in requests.items():
        app = applications.submit_application(
            uow(),
            applicants[key],
            ApplicationRequest(
                scheme_id=scheme.id,
                title=title,
                gpu_model="H800",
                gpu_hours=hours,
                starts_on=today,
                ends_on=today + timedelta(days=365),
                justification=justification,
                governance=GovernanceAssessment(
                    intended_use=f"{title}: research and service use in Hong Kong",
                    personal_data=key in ("kiar", "vhf"),
                    personal_data_details="De-identified under the PDPO; access logged"
                    if key in ("kiar", "vhf")
                    else "",
                    risk_tier="high" if key in ("kiar", "vhf") else "limited",
                    human_oversight="Outputs are reviewed by qualified staff before any use.",
                ),
            ),
        )
        apps[key] = app.id
        events.append(f"application #{app.id} from {applicants[key].name}: {title}")

    def score(reviewer: str, key: str, base: int, rec: str) -> None:
        scores = {c: min(10, base + i % 2) for i, c in enumerate(RUBRIC)}
        reviews.submit_review(uow(), reviewers[reviewer], apps[key], scores, rec, "Reviewed.")

    try:
        score("lau", "hu", 9, "approve")
    except DomainError as refused:
        events.append(f"refused: Dr Carmen Lau reviewing Harbour University - {refused.detail}")
    reviews.declare_conflict(
        uow(), reviewers["yip"], apps["lantern"], "Former adviser to the founders"
    )
    try:
        score("yip", "lantern", 8, "approve")
    except DomainError as refused:
        events.append(f"refused: Dr Ben Yip reviewing Lantern Robotics - {refused.detail}")
    score("ng", "hu", 8, "approve")
    score("yip", "hu", 8, "approve")
    score("ng", "kiar", 9, "approve")
    score("yip", "kiar", 8, "approve")
    score("ng", "lantern", 7, "approve")
    score("lau", "lantern", 7, "approve")
    score("ng", "vhf", 3, "reject")
    score("yip", "vhf", 4, "reject")

    # one more, still with the committee: something for the portal's reviewers and operators
    waiting = applications.submit_application(
        uow(),
        applicants["lantern"],
        ApplicationRequest(
            scheme_id=scheme.id,
            title="Warehouse robot grasping policy (full programme)",
            gpu_model="H800",
            gpu_hours=6_000,
            starts_on=today + timedelta(days=30),
            ends_on=today + timedelta(days=395),
            justification="Scale the pilot's 300M policy to 1.2B parameters on 200,000 "
            "episodes across three warehouse layouts; 8 GPUs for about a month per stage.",
            governance=GovernanceAssessment(
                intended_use="Autonomous picking in Hong Kong logistics warehouses",
                personal_data=False,
                risk_tier="limited",
                human_oversight="A floor supervisor can stop every robot; all grasps are logged.",
            ),
            declarations=tuple(applications.DECLARATIONS),
        ),
    )
    reviews.submit_review(
        uow(),
        reviewers["ng"],
        waiting.id,
        {c: 7 + i % 2 for i, c in enumerate(RUBRIC)},
        "approve",
        "The pilot's results support the larger request.",
    )
    reviews.assign_reviewer(uow(), operator, waiting.id, reviewers["yip"].user_id)
    events.append(
        f"application #{waiting.id} from {applicants['lantern'].name} awaits Dr Ben Yip's review"
    )

    allocations: dict[str, int] = {}
    for key, hours, rate_bp, reason in (
        ("hu", 50_000, None, ""),
        ("kiar", 120_000, None, ""),
        ("lantern", 4, 8500, "Start-up pilot: exceptional 85% under the scheme's rules"),
    ):
        allocation = decisions.approve(
            uow(),
            operator,
            apps[key],
            decisions.Approval(
                gpu_hours=hours,
                starts_on=today,
                ends_on=today + timedelta(days=365),
                rate_bp=rate_bp,
                rate_reason=reason,
                conditions="Quarterly progress reports; acknowledge the scheme in publications.",
            ),
        )
        allocations[key] = allocation.id
        events.append(
            f"approved #{apps[key]}: {hours:,} GPU-hours, subsidy commitment "
            f"HK${allocation.commitment_cents / 100:,.2f}"
        )
    decisions.reject(
        uow(),
        operator,
        apps["vhf"],
        "Credit scoring is outside the scheme's priorities; the request does not show why "
        "public compute is needed.",
    )
    events.append(f"rejected #{apps['vhf']} (Victoria Harbour Fintech)")
    centre = DemoCentre(
        scheme.id, operator, funder, reviewers, applicants, allocations, events=events
    )
    for actor in [operator, funder, *reviewers.values(), *applicants.values()]:
        centre.tokens[actor.name] = accounts.issue_token(uow(), SYSTEM, actor.user_id, "demo")
        sessions.set_password(uow(), SYSTEM, actor.user_id, DEMO_PASSWORD)
    return centre


def workload(steps: int, step_s: float, fail_at: int = 0) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "aisc.demo_workload",
        "--steps",
        str(steps),
        "--step-seconds",
        str(step_s),
    ]
    return argv + (["--fail-at", str(fail_at)] if fail_at else [])


@dataclass
class DemoJobs:
    submitted: list[int]
    refused: list[str]
    cancel_target: int


def submit_jobs(runtime: Runtime, centre: DemoCentre) -> DemoJobs:
    uow = runtime.uow
    hu, kiar, lantern = (centre.applicants[k] for k in ("hu", "kiar", "lantern"))
    a = centre.allocations
    plan: list[tuple[Actor, jobs.JobRequest]] = [
        (hu, jobs.JobRequest(a["hu"], workload(6, 0.5), 8, 600, "speech-pretrain-shard-1")),
        (hu, jobs.JobRequest(a["hu"], workload(6, 0.5), 8, 600, "speech-pretrain-shard-2")),
        (kiar, jobs.JobRequest(a["kiar"], workload(4, 0.5), 4, 600, "imaging-vit-sweep-a")),
        (kiar, jobs.JobRequest(a["kiar"], workload(4, 0.5), 4, 600, "imaging-vit-sweep-b")),
        (kiar, jobs.JobRequest(a["kiar"], workload(3, 0.4), 2, 300, "imaging-eval")),
        (lantern, jobs.JobRequest(a["lantern"], workload(3, 0.5), 1, 900, "grasp-finetune")),
        (hu, jobs.JobRequest(a["hu"], workload(2, 0.3), 1, 120, "asr-inference-batch")),
        (kiar, jobs.JobRequest(a["kiar"], workload(5, 0.4, fail_at=3), 2, 300, "imaging-oom")),
        (hu, jobs.JobRequest(a["hu"], workload(100, 0.5), 1, 3, "runaway-eval")),  # times out
        (kiar, jobs.JobRequest(a["kiar"], ["/opt/missing/bin/train"], 1, 60, "misconfigured")),
        (lantern, jobs.JobRequest(a["lantern"], workload(2, 0.3), 1, 600, "grasp-eval")),
        (hu, jobs.JobRequest(a["hu"], workload(60, 0.5), 2, 600, "cancelled-run")),
        (kiar, jobs.JobRequest(a["kiar"], workload(2, 0.3), 4, 300, "imaging-export")),
    ]
    submitted: list[int] = []
    for actor, request in plan:
        submitted.append(jobs.submit_job(uow(), actor, request).id)
    refused = []
    try:  # 8 GPUs for an hour is 8 GPU-hours; the pilot has 4
        jobs.submit_job(
            uow(), lantern, jobs.JobRequest(a["lantern"], workload(3, 0.5), 8, 3600, "grasp-full")
        )
    except DomainError as over:
        refused.append(f"Lantern Robotics 8-GPU job refused: {over.detail}")
    return DemoJobs(submitted, refused, cancel_target=submitted[11])


def run_until_done(
    runtime: Runtime,
    centre: DemoCentre,
    demo_jobs: DemoJobs,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    timeout_s: float = 120,
) -> None:
    """Drive the controller until every demo job has ended, cancelling one along the way."""
    deadline = time.monotonic() + timeout_s
    cancelled = False
    started = time.monotonic()
    total = len(demo_jobs.submitted)
    while time.monotonic() < deadline:
        runtime.controller.cycle()
        states = {j.id: j.state for j in jobs.list_jobs(runtime.uow(), centre.operator, limit=1000)}
        running_long = time.monotonic() - started > 1.5
        if not cancelled and running_long and states[demo_jobs.cancel_target] == "running":
            jobs.cancel_job(runtime.uow(), centre.applicants["hu"], demo_jobs.cancel_target)
            cancelled = True
        done = sum(1 for i in demo_jobs.submitted if JobState(states[i]).is_final)
        on_progress(done, total)
        if done == total:
            return
        time.sleep(runtime.settings.controller_interval_s)
    raise TimeoutError("the demo jobs did not finish in time")


def save_tokens(centre: DemoCentre, path: Path) -> None:
    path.write_text(json.dumps(centre.tokens, indent=2) + "\n")
    path.chmod(0o600)
