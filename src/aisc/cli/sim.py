"""`aisc sim run` and `aisc sim compare`: replay a trace through the scheduler, offline."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aisc.cli.output import console, fail
from aisc.domain.errors import ValidationError
from aisc.domain.money import parse_cents, parse_rate

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
):  # type: ignore[no-untyped-def]
    from aisc.sim.engine import SimCluster
    from aisc.sim.planner import cluster_for_capacity, scale_to_load
    from aisc.sim.records import Trace
    from aisc.sim.traces import TraceError, load_trace, parse_columns

    if fmt not in ("auto", "philly", "alibaba", "generic"):
        fail(f"unknown trace format {fmt!r}: use auto, philly, alibaba or generic")
    if time_format not in ("seconds", "datetime"):
        fail(f"unknown time format {time_format!r}: use seconds or datetime")
    try:
        mapping = parse_columns(columns) if columns else None
        data = load_trace(
            trace,
            fmt,  # type: ignore[arg-type]
            mapping,
            time_format,  # type: ignore[arg-type]
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
    data,  # type: ignore[no-untyped-def]
    cluster,
    policies: list[str],
    limit_factor: float,
    fund_hkd: str,
    price_hkd: str,
    subsidy_rate: str,
    json_file: Path | None,
    out: Path | None,
) -> None:
    from aisc.sim import report
    from aisc.sim.engine import POLICIES, SimRun
    from aisc.sim.planner import money, offered_load

    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        fail(f"unknown policy {', '.join(unknown) or '(none)'}: use {', '.join(POLICIES)}")
    if limit_factor < 1:
        fail("--limit-factor must be at least 1: a time limit is never shorter than the job")
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
            run = SimRun(
                data,
                cluster,
                policy,
                limit_factor,
                progress=lambda done, task=task: progress.update(task, completed=done),
            )
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


TraceArg = typer.Argument(..., exists=False, help=TRACE_HELP)


@sim_app.command("run")
def run(
    trace: Path = TraceArg,
    policy: str = typer.Option("aisc", help="fifo, backfill, aisc or srtf."),
    fmt: str = typer.Option("auto", "--format", help="auto, philly, alibaba or generic."),
    columns: str = typer.Option(
        None, help="Generic CSV: submit=COL,duration=COL|end=COL,gpus=COL[,project=COL]."
    ),
    time_format: str = typer.Option("seconds", help="Generic CSV times: seconds or datetime."),
    datetime_format: str = typer.Option(None, help="strptime format for datetime times."),
    nodes: int = typer.Option(None, help="Nodes in the cluster [default: 64]."),
    gpus_per_node: int = typer.Option(8, help="GPUs per node."),
    gpu_model: str = typer.Option("H800", help="GPU model of every node."),
    pflops: float = typer.Option(None, help="Size the cluster for this capacity instead."),
    pflops_per_gpu: float = typer.Option(None, help="Peak PFLOPS of one GPU, for --pflops."),
    load: float = typer.Option(None, help="Scale arrivals to this offered load (e.g. 0.9)."),
    limit_factor: float = typer.Option(1.5, help="Time limit = true duration x this."),
    max_jobs: int = typer.Option(None, help="Replay only the first N jobs."),
    fund_hkd: str = typer.Option("3000000000", help="The subsidy fund in HKD."),
    price_hkd: str = typer.Option("30.00", help="List price per GPU-hour in HKD."),
    subsidy_rate: str = typer.Option("0.70", help="Subsidy rate."),
    json_file: Path = typer.Option(None, "--json", help="Write {policy: {metric: value}} here."),
    out: Path = typer.Option(None, help="Write CSV, JSON, PNG plots and report.html here."),
) -> None:
    """Replay a trace with one policy."""
    data, cluster = _options(
        trace,
        fmt,
        columns,
        time_format,
        datetime_format,
        nodes,
        gpus_per_node,
        gpu_model,
        pflops,
        pflops_per_gpu,
        load,
        max_jobs,
    )
    _simulate(
        data, cluster, [policy], limit_factor, fund_hkd, price_hkd, subsidy_rate, json_file, out
    )


@sim_app.command("compare")
def compare(
    trace: Path = TraceArg,
    policies: str = typer.Option("fifo,backfill,aisc,srtf", help="Comma-separated policies."),
    fmt: str = typer.Option("auto", "--format", help="auto, philly, alibaba or generic."),
    columns: str = typer.Option(
        None, help="Generic CSV: submit=COL,duration=COL|end=COL,gpus=COL[,project=COL]."
    ),
    time_format: str = typer.Option("seconds", help="Generic CSV times: seconds or datetime."),
    datetime_format: str = typer.Option(None, help="strptime format for datetime times."),
    nodes: int = typer.Option(None, help="Nodes in the cluster [default: 64]."),
    gpus_per_node: int = typer.Option(8, help="GPUs per node."),
    gpu_model: str = typer.Option("H800", help="GPU model of every node."),
    pflops: float = typer.Option(None, help="Size the cluster for this capacity instead."),
    pflops_per_gpu: float = typer.Option(None, help="Peak PFLOPS of one GPU, for --pflops."),
    load: float = typer.Option(None, help="Scale arrivals to this offered load (e.g. 0.9)."),
    limit_factor: float = typer.Option(1.5, help="Time limit = true duration x this."),
    max_jobs: int = typer.Option(None, help="Replay only the first N jobs."),
    fund_hkd: str = typer.Option("3000000000", help="The subsidy fund in HKD."),
    price_hkd: str = typer.Option("30.00", help="List price per GPU-hour in HKD."),
    subsidy_rate: str = typer.Option("0.70", help="Subsidy rate."),
    json_file: Path = typer.Option(None, "--json", help="Write {policy: {metric: value}} here."),
    out: Path = typer.Option(None, help="Write CSV, JSON, PNG plots and report.html here."),
) -> None:
    """Replay a trace with several policies on the same cluster and compare them."""
    data, cluster = _options(
        trace,
        fmt,
        columns,
        time_format,
        datetime_format,
        nodes,
        gpus_per_node,
        gpu_model,
        pflops,
        pflops_per_gpu,
        load,
        max_jobs,
    )
    names = [p.strip() for p in policies.split(",") if p.strip()]
    if len(set(names)) != len(names):
        fail("each policy may appear once in --policies")
    _simulate(data, cluster, names, limit_factor, fund_hkd, price_hkd, subsidy_rate, json_file, out)
