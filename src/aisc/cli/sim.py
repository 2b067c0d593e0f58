"""`aisc sim run` and `aisc sim compare`: replay a trace through the scheduler, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from aisc.cli.output import console, fail
from aisc.domain.errors import ValidationError
from aisc.domain.money import parse_cents, parse_rate
from aisc.sim.engine import SimCluster
from aisc.sim.records import Trace

sim_app = typer.Typer(
    help="Replay GPU cluster traces through aisc's scheduler: waits, utilisation, fairness, money."
)

TRACE_HELP = "A trace CSV: Philly, Alibaba openb pods, or any CSV with --columns."


def register(app: typer.Typer) -> None:
    app.add_typer(sim_app, name="sim")


def _options(
    trace: Path,
    fmt: str,
    columns: str | None,
    time_format: str,
    datetime_format: str | None,
    nodes: int | None,
    gpus_per_node: int,
    gpu_model: str,
    pflops: float | None,
    pflops_per_gpu: float | None,
    load: float | None,
    max_jobs: int | None,
) -> tuple[Trace, SimCluster]:
    from aisc.sim.planner import cluster_for_capacity, scale_to_load
    from aisc.sim.traces import TraceError, load_trace, parse_columns

    if fmt not in ("auto", "philly", "alibaba", "generic"):
        fail(f"unknown trace format {fmt!r}: use auto, philly, alibaba or generic")
    if time_format not in ("seconds", "datetime"):
        fail(f"unknown time format {time_format!r}: use seconds or datetime")
    try:
        mapping = parse_columns(columns) if columns else None
        data = load_trace(
            trace,
            cast(Literal["auto", "philly", "alibaba", "generic"], fmt),
            mapping,
            cast(Literal["seconds", "datetime"], time_format),
            datetime_format,
        )
    except TraceError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot read {trace}: {exc.strerror or exc}")
    if max_jobs is not None:
        if max_jobs < 1:
            fail("--max-jobs must be at least 1")
        data = Trace(data.name, data.jobs[:max_jobs], data.start_time)
    try:
        if pflops is not None:
            cluster = cluster_for_capacity(pflops, gpu_model, gpus_per_node, pflops_per_gpu)
        else:
            cluster = SimCluster(nodes if nodes is not None else 64, gpus_per_node, gpu_model)
        if load is not None:
            data = scale_to_load(data, cluster.total_gpus, load)
    except ValueError as exc:
        fail(str(exc))
    return data, cluster


def _simulate(
    data: Trace,
    cluster: SimCluster,
    policies: list[str],
    limit_factor: float,
    preemption: bool,
    preempt_min_runtime: float,
    fund_hkd: str,
    price_hkd: str,
    subsidy_rate: str,
    json_file: Path | None,
    out: Path | None,
) -> None:
    from aisc.sim import report
    from aisc.sim.engine import POLICIES, SimRun, policy_config
    from aisc.sim.planner import money, offered_load

    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        fail(f"unknown policy {', '.join(unknown) or '(none)'}: use {', '.join(POLICIES)}")
    if limit_factor < 1:
        fail("--limit-factor must be at least 1: a time limit is never shorter than the job")
    if preempt_min_runtime < 0:
        fail("--preempt-min-runtime must be zero or more seconds")
    try:
        fund = parse_cents(fund_hkd)
        price = parse_cents(price_hkd)
        rate = parse_rate(subsidy_rate)
    except ValidationError as exc:
        fail(exc.detail)
    if fund <= 0 or price <= 0:
        fail("the fund and the price must be positive")
    console.print(
        f"{data.name}: {len(data.jobs):,} jobs, {data.gpu_seconds / 3600:,.0f} GPU-hours on "
        f"{cluster.nodes} x {cluster.gpus_per_node} {cluster.gpu_model} "
        f"({cluster.total_gpus:,} GPUs), offered load {offered_load(data, cluster.total_gpus):.2f}"
    )
    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        for policy in policies:
            task = progress.add_task(f"{policy:>8}", total=len(data.jobs))

            def advance(done: int, task: TaskID = task) -> None:
                progress.update(task, completed=done)

            config = policy_config(policy)
            if policy == "aisc":  # the what-ifs of the full policy's preemption settings
                config = config.with_(preemption=preemption, min_runtime_s=preempt_min_runtime)
            run = SimRun(data, cluster, policy, limit_factor, config=config, progress=advance)
            result = run.run()
            result.money = money(result, fund, price, rate)
            results.append(result)
            if run.refused:
                console.print(f"  {policy}: {run.refused} jobs larger than the cluster skipped")
    summaries = report.summaries_of(results)
    console.print(report.rich_table(summaries))
    if json_file is not None:
        report.write_json(summaries, json_file)
        console.print(f"summary written to {json_file}")
    if out is not None:
        paths = report.write_all(results, out)
        console.print(f"report written to {paths['report.html']} (with CSV, JSON and PNG files)")


# options both commands take, declared once
TraceArg = Annotated[Path, typer.Argument(help=TRACE_HELP)]
Format = Annotated[str, typer.Option("--format", help="auto, philly, alibaba or generic.")]
Columns = Annotated[
    str | None,
    typer.Option(help="Generic CSV: submit=COL,duration=COL|end=COL,gpus=COL[,project=COL]."),
]
TimeFormat = Annotated[str, typer.Option(help="Generic CSV times: seconds or datetime.")]
DatetimeFormat = Annotated[str | None, typer.Option(help="strptime format for datetime times.")]
Nodes = Annotated[
    int | None, typer.Option(help="Nodes in the cluster (64 unless --pflops sizes it).")
]
GpusPerNode = Annotated[int, typer.Option(help="GPUs per node.")]
GpuModel = Annotated[str, typer.Option(help="GPU model of every node.")]
Pflops = Annotated[float | None, typer.Option(help="Size the cluster for this capacity instead.")]
PflopsPerGpu = Annotated[float | None, typer.Option(help="Peak PFLOPS of one GPU, for --pflops.")]
Load = Annotated[float | None, typer.Option(help="Scale arrivals to this offered load (e.g. 0.9).")]
LimitFactor = Annotated[float, typer.Option(help="Time limit = true duration x this.")]
Preemption = Annotated[
    bool, typer.Option(help="aisc policy: borrowed jobs may be preempted (as the live default).")
]
PreemptMinRuntime = Annotated[
    float, typer.Option(help="aisc policy: seconds a borrowed job runs before it is preemptible.")
]
MaxJobs = Annotated[int | None, typer.Option(help="Replay only the first N jobs.")]
FundHkd = Annotated[str, typer.Option(help="The subsidy fund in HKD.")]
PriceHkd = Annotated[str, typer.Option(help="List price per GPU-hour in HKD.")]
SubsidyRate = Annotated[str, typer.Option(help="Subsidy rate.")]
JsonFile = Annotated[
    Path | None, typer.Option("--json", help="Write {policy: {metric: value}} here.")
]
Out = Annotated[Path | None, typer.Option(help="Write CSV, JSON, PNG plots and report.html here.")]


@sim_app.command("run")
def run(
    trace: TraceArg,
    policy: Annotated[str, typer.Option(help="fifo, backfill, aisc or srtf.")] = "aisc",
    fmt: Format = "auto",
    columns: Columns = None,
    time_format: TimeFormat = "seconds",
    datetime_format: DatetimeFormat = None,
    nodes: Nodes = None,
    gpus_per_node: GpusPerNode = 8,
    gpu_model: GpuModel = "H800",
    pflops: Pflops = None,
    pflops_per_gpu: PflopsPerGpu = None,
    load: Load = None,
    limit_factor: LimitFactor = 1.5,
    preemption: Preemption = True,
    preempt_min_runtime: PreemptMinRuntime = 600.0,
    max_jobs: MaxJobs = None,
    fund_hkd: FundHkd = "3000000000",
    price_hkd: PriceHkd = "30.00",
    subsidy_rate: SubsidyRate = "0.70",
    json_file: JsonFile = None,
    out: Out = None,
) -> None:
    """Replay a trace with one policy."""
    options = dict(locals())
    _replay([options.pop("policy")], options)


@sim_app.command("compare")
def compare(
    trace: TraceArg,
    policies: Annotated[
        str, typer.Option(help="Comma-separated policies.")
    ] = "fifo,backfill,aisc,srtf",
    fmt: Format = "auto",
    columns: Columns = None,
    time_format: TimeFormat = "seconds",
    datetime_format: DatetimeFormat = None,
    nodes: Nodes = None,
    gpus_per_node: GpusPerNode = 8,
    gpu_model: GpuModel = "H800",
    pflops: Pflops = None,
    pflops_per_gpu: PflopsPerGpu = None,
    load: Load = None,
    limit_factor: LimitFactor = 1.5,
    preemption: Preemption = True,
    preempt_min_runtime: PreemptMinRuntime = 600.0,
    max_jobs: MaxJobs = None,
    fund_hkd: FundHkd = "3000000000",
    price_hkd: PriceHkd = "30.00",
    subsidy_rate: SubsidyRate = "0.70",
    json_file: JsonFile = None,
    out: Out = None,
) -> None:
    """Replay a trace with several policies on the same cluster and compare them."""
    options = dict(locals())
    names = [p.strip() for p in options.pop("policies").split(",") if p.strip()]
    if len(set(names)) != len(names):
        fail("each policy may appear once in --policies")
    _replay(names, options)


def _replay(policies: list[str], o: dict[str, Any]) -> None:
    data, cluster = _options(
        o["trace"],
        o["fmt"],
        o["columns"],
        o["time_format"],
        o["datetime_format"],
        o["nodes"],
        o["gpus_per_node"],
        o["gpu_model"],
        o["pflops"],
        o["pflops_per_gpu"],
        o["load"],
        o["max_jobs"],
    )
    _simulate(
        data,
        cluster,
        policies,
        o["limit_factor"],
        o["preemption"],
        o["preempt_min_runtime"],
        o["fund_hkd"],
        o["price_hkd"],
        o["subsidy_rate"],
        o["json_file"],
        o["out"],
    )
