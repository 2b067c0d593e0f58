"""Reports of a simulation: JSON and CSV for machines, a rich table for the terminal, PNG plots
and one self-contained HTML page (plots embedded) that can be mailed to a committee.

Plots are drawn with matplotlib's object-oriented API on the Agg renderer; pyplot (and its
global figure state and backend choice) is never touched, so this is safe in servers, threads
and headless CI.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path

import numpy as np
from jinja2 import Environment
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from rich.table import Table

from aisc.domain.money import format_cents
from aisc.sim.metrics import Value, project_shares, summarise, utilisation_series, wait_cdf
from aisc.sim.records import SimResult

PathLike = str | os.PathLike[str]
Summaries = Mapping[str, Mapping[str, Value]]

DPI = 110
_FIGSIZE = (9.0, 4.5)

JOB_COLUMNS = (
    "policy",
    "job_id",
    "project",
    "gpus",
    "requested_gpus",
    "submit_s",
    "start_s",
    "end_s",
    "wait_s",
    "jct_s",
    "preemptions",
)

FILES = (
    "summary.json",
    "summary.csv",
    "jobs.csv",
    "utilisation.png",
    "wait_cdf.png",
    "fund_burndown.png",
    "report.html",
)


# -- formatting -------------------------------------------------------------------------------


def fmt_duration(seconds: float) -> str:
    """Seconds for a human: '0 s', '45 s', '12.5 min', '3.2 h', '4.1 d'."""
    if math.isnan(seconds):
        return "—"
    s = abs(seconds)
    sign = "-" if seconds < 0 else ""
    if s < 10:
        text = f"{s:.1f} s" if s and s != int(s) else f"{s:.0f} s"
    elif s < 60:
        text = f"{s:.0f} s"
    elif s < 3600:
        text = f"{s / 60:.1f} min"
    elif s < 48 * 3600:
        text = f"{s / 3600:.1f} h"
    else:
        text = f"{s / 86400:.1f} d"
    return sign + text


_DURATION_KEYS = {
    "makespan_s",
    "avg_wait_s",
    "median_wait_s",
    "p95_wait_s",
    "p99_wait_s",
    "max_wait_s",
    "avg_jct_s",
    "median_jct_s",
    "p95_jct_s",
    "p99_jct_s",
}

#: (metric key, label) in display order; rows no summary has are left out.
_ROWS: tuple[tuple[str, str], ...] = (
    ("jobs", "jobs"),
    ("utilisation", "utilisation"),
    ("makespan_s", "makespan"),
    ("avg_wait_s", "wait, mean"),
    ("median_wait_s", "wait, median"),
    ("p95_wait_s", "wait, p95"),
    ("p99_wait_s", "wait, p99"),
    ("avg_jct_s", "completion, mean"),
    ("median_jct_s", "completion, median"),
    ("p95_jct_s", "completion, p95"),
    ("p99_jct_s", "completion, p99"),
    ("avg_bounded_slowdown", "bounded slowdown"),
    ("jain", "fairness (Jain)"),
    ("max_share_deviation", "max share gap"),
    ("preemptions", "preemptions"),
    ("lost_gpu_hours", "lost GPU-hours"),
    ("subsidy_cents", "subsidy (HK$)"),
    ("fund_exhaustion", "fund runs out"),
    ("wall_s", "sim wall time"),
    ("jobs_per_s", "sim speed (jobs/s)"),
)


def format_metric(key: str, value: Value) -> str:
    """One summary value as shown in the terminal table and the HTML report."""
    if value is None:
        return "never" if key == "fund_exhaustion" else "—"
    if isinstance(value, str):
        return value
    if key in _DURATION_KEYS:
        return fmt_duration(float(value))
    if key in ("utilisation", "max_share_deviation"):
        return f"{100 * float(value):.1f}" + ("%" if key == "utilisation" else " pp")
    if key == "jain":
        return f"{float(value):.3f}"
    if key in ("subsidy_cents", "fund_total_cents"):
        return format_cents(int(value))
    if key == "subsidy_hkd":
        return f"{float(value):,.2f}"
    if key == "wall_s":
        return f"{float(value):.2f} s"
    if key in ("lost_gpu_hours", "gpu_hours", "jobs_per_s"):
        return f"{float(value):,.1f}"
    if key == "avg_bounded_slowdown":
        return f"{float(value):.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def _table_rows(summaries: Summaries) -> list[tuple[str, list[str]]]:
    rows = []
    for key, label in _ROWS:
        if any(key in s for s in summaries.values()):
            rows.append((label, [format_metric(key, s.get(key)) for s in summaries.values()]))
    return rows


# -- machine-readable -------------------------------------------------------------------------


def _prepare(path: PathLike) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def write_json(summaries: Summaries, path: PathLike) -> Path:
    """``{policy: {metric: value}}``, strict JSON (no NaN)."""
    p = _prepare(path)
    data = {policy: dict(metrics) for policy, metrics in summaries.items()}
    p.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return p


def write_csv_summary(summaries: Summaries, path: PathLike) -> Path:
    """One row per policy: ``policy`` then every metric any summary has (None -> empty)."""
    p = _prepare(path)
    keys: list[str] = []
    for metrics in summaries.values():
        keys.extend(k for k in metrics if k not in keys)
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["policy", *keys])
        for policy, metrics in summaries.items():
            row = [metrics.get(k) for k in keys]
            writer.writerow([policy, *("" if v is None else v for v in row)])
    return p


def write_csv_jobs(results: Sequence[SimResult], path: PathLike) -> Path:
    """One row per job per policy (columns in ``JOB_COLUMNS``)."""
    p = _prepare(path)
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(JOB_COLUMNS)
        for result in results:
            for r in result.records:
                writer.writerow(
                    [
                        result.policy,
                        r.job_id,
                        r.project,
                        r.gpus,
                        r.requested_gpus,
                        r.submit_s,
                        r.start_s,
                        r.end_s,
                        r.wait_s,
                        r.jct_s,
                        r.preemptions,
                    ]
                )
    return p


# -- terminal ---------------------------------------------------------------------------------


def rich_table(summaries: Summaries) -> Table:
    """Metrics as rows, policies as columns (fits 100 columns for about six policies)."""
    table = Table(title="Scheduling policies compared", title_justify="left")
    table.add_column("metric", style="bold", no_wrap=True)
    for policy in summaries:
        table.add_column(policy, justify="right", overflow="fold")
    for label, cells in _table_rows(summaries):
        table.add_row(label, *cells)
    return table


# -- plots ------------------------------------------------------------------------------------


def _new_figure() -> Figure:
    fig = Figure(figsize=_FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _legend(fig: Figure) -> None:
    """Below the axes, so that it never hides a curve."""
    handles = len(fig.axes[0].get_legend_handles_labels()[1])
    fig.legend(loc="outside lower center", ncols=min(3, max(1, handles)), fontsize="small")


def _note(fig: Figure, title: str, text: str) -> Figure:
    ax = fig.subplots()
    ax.set_title(title)
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="0.35")
    return fig


def utilisation_figure(results: Sequence[SimResult], buckets: int = 200) -> Figure:
    fig = _new_figure()
    series = [(r, utilisation_series(r, buckets)) for r in results]
    series = [(r, s) for r, s in series if s]
    if not series:
        return _note(fig, "Cluster utilisation", "No jobs ran: nothing to plot.")
    span = max(s[-1][0] - s[0][0] for _, s in series)
    unit, scale = ("days", 86400.0) if span > 3 * 86400 else ("hours", 3600.0)
    ax = fig.subplots()
    for result, s in series:
        origin = s[0][0]
        step = (s[1][0] - s[0][0]) if len(s) > 1 else 0.0
        xs = [(t - origin) / scale for t, _ in s] + [(s[-1][0] + step - origin) / scale]
        ys = [100 * f for _, f in s] + [100 * s[-1][1]]
        mean = 100 * sum(f for _, f in s) / len(s)
        ax.step(xs, ys, where="post", linewidth=1.2, label=f"{result.policy} (mean {mean:.1f}%)")
    ax.set_ylim(0, 105)
    ax.set_xlim(left=0)
    ax.set_title("Cluster utilisation over the trace")
    ax.set_xlabel(f"time since first submission ({unit})")
    ax.set_ylabel("busy GPUs (% of cluster)")
    ax.grid(alpha=0.3)
    _legend(fig)
    return fig


_WAIT_TICKS = (
    (1.0, "≤1 s"),
    (10.0, "10 s"),
    (60.0, "1 min"),
    (600.0, "10 min"),
    (3600.0, "1 h"),
    (6 * 3600.0, "6 h"),
    (86400.0, "1 d"),
    (7 * 86400.0, "1 w"),
    (30 * 86400.0, "30 d"),
)


def _thin(n: int, most: int = 4000) -> list[int]:
    """Indices to draw of n sorted points: all of them, or ``most`` evenly spaced including
    the last (a curve of a million steps looks the same and renders in a fraction of the time)."""
    if n <= most:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, most)})


def wait_cdf_figure(results: Sequence[SimResult]) -> Figure:
    fig = _new_figure()
    curves = [(r, *wait_cdf(r)) for r in results if r.records]
    if not curves:
        return _note(fig, "Waiting time", "No jobs ran: nothing to plot.")
    ax = fig.subplots()
    longest = 1.0
    for result, waits, frac in curves:
        keep = _thin(len(waits))
        xs = [1.0, *(max(1.0, waits[i]) for i in keep)]
        ys = [0.0, *(frac[i] for i in keep)]
        longest = max(longest, xs[-1])
        median = waits[len(waits) // 2]
        label = f"{result.policy} (median {fmt_duration(median)})"
        ax.step(xs, ys, where="post", linewidth=1.2, label=label)
    ax.set_xscale("log")
    ticks = [(t, label) for t, label in _WAIT_TICKS if t <= longest * 1.5]
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(0.9, max(10.0, longest * 1.5))
    ax.set_ylim(0, 1.02)
    ax.set_title("Waiting time, cumulative")
    ax.set_xlabel("wait before the run that completed (log scale; waits under 1 s drawn at 1 s)")
    ax.set_ylabel("fraction of jobs")
    ax.grid(alpha=0.3, which="major")
    _legend(fig)
    return fig


def _month_start(month: str) -> date:
    year, mon = month.split("-")[:2]
    return date(int(year), int(mon), 1)


def _next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


def _parse_date(text: str) -> date | None:
    for candidate in (text[:10], f"{text[:7]}-01"):
        try:
            return date.fromisoformat(candidate)
        except ValueError:
            continue
    return None


def _days(days: Sequence[date]) -> np.ndarray:
    return np.array(days, dtype="datetime64[D]")


def _hkd_axis(value: float, _pos: int | None) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.1f}M"
    return f"{value:,.0f}"


def fund_burndown_figure(results: Sequence[SimResult]) -> Figure:
    fig = _new_figure()
    funded = [r for r in results if r.money is not None and r.money.months]
    if not funded:
        return _note(
            fig,
            "Subsidy fund burn-down",
            "No money model in this run (no price or fund given): nothing to plot.",
        )
    ax = fig.subplots()
    funds: set[int] = set()
    for result in funded:
        money = result.money
        assert money is not None
        months = sorted(money.months, key=lambda m: m.month)
        xs = [_month_start(months[0].month)]
        ys = [0.0]
        total = 0
        for m in months:
            total += m.subsidy_cents
            xs.append(_next_month(_month_start(m.month)))
            ys.append(total / 100.0)
        label = result.policy
        (line,) = ax.plot(_days(xs), ys, marker="o", markersize=3, label=label)
        funds.add(money.fund_total_cents)
        when = money.exhaustion_date
        if when is not None:
            line.set_label(f"{label} (fund runs out {when})")
            out = _parse_date(when)
            if out is not None:
                colour = line.get_color()
                fund = money.fund_total_cents / 100.0
                ax.plot(_days([xs[-1], out]), [ys[-1], fund], linestyle=":", color=colour)
                ax.plot(_days([out, out]), [0.0, fund], linestyle="--", linewidth=0.8, color=colour)
                ax.plot(_days([out]), [fund], marker="x", markersize=8, color=colour)
    for fund_cents in sorted(funds):
        ax.axhline(
            fund_cents / 100.0,
            color="black",
            linewidth=1.0,
            label=f"fund HK$ {format_cents(fund_cents)}",
        )
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.yaxis.set_major_formatter(FuncFormatter(_hkd_axis))
    ax.set_ylim(bottom=0)
    ax.set_title("Subsidy fund burn-down (dotted: forecast to exhaustion)")
    ax.set_xlabel("month")
    ax.set_ylabel("cumulative subsidy spent (HK$)")
    ax.grid(alpha=0.3)
    _legend(fig)
    return fig


def _save(fig: Figure, path: PathLike) -> Path:
    p = _prepare(path)
    p.write_bytes(_png_bytes(fig))
    return p


def plot_utilisation(results: Sequence[SimResult], path: PathLike) -> Path:
    return _save(utilisation_figure(results), path)


def plot_wait_cdf(results: Sequence[SimResult], path: PathLike) -> Path:
    return _save(wait_cdf_figure(results), path)


def plot_fund_burndown(results: Sequence[SimResult], path: PathLike) -> Path:
    return _save(fund_burndown_figure(results), path)


_FIGURES: dict[str, Callable[[Sequence[SimResult]], Figure]] = {
    "utilisation.png": utilisation_figure,
    "wait_cdf.png": wait_cdf_figure,
    "fund_burndown.png": fund_burndown_figure,
}


def _render_pngs(results: Sequence[SimResult]) -> dict[str, bytes]:
    return {name: _png_bytes(make(results)) for name, make in _FIGURES.items()}


# -- HTML -------------------------------------------------------------------------------------

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Scheduling simulation: {{ trace }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
         max-width: 60rem; margin: 0 auto; padding: 1rem; line-height: 1.45; }
  h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
  h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
  h3 { font-size: 1rem; margin-bottom: 0.3rem; }
  .scroll { overflow-x: auto; }
  table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 0.5rem 0; }
  th, td { padding: 0.3rem 0.6rem; border-bottom: 1px solid #eee; text-align: right;
           white-space: nowrap; }
  th:first-child, td:first-child { text-align: left; }
  thead th { background: #f4f6f8; }
  img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 1rem; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
  dt { color: #555; }
  dd { margin: 0; }
  .note { background: #f8f8f2; border-left: 3px solid #bbb; padding: 0.5rem 1rem; }
</style>
</head>
<body>
<h1>Scheduling simulation</h1>
<p>{{ policies | length }} polic{{ "y" if policies | length == 1 else "ies" }} replayed on
the same trace: {{ policies | join(", ") }}.</p>

<h2>Run</h2>
<dl>
{% for name, value in parameters %}  <dt>{{ name }}</dt><dd>{{ value }}</dd>
{% endfor %}</dl>

<h2>How to read this</h2>
<div class="note">
<p><b>Wait</b> is the time from submission to the start of the run that completed;
<b>completion</b> adds the run itself. The p95 and p99 rows show the unlucky jobs: a policy
with a good mean but a long tail makes some users wait a very long time.</p>
<p><b>Utilisation</b> is the GPU time occupied (including work later lost to preemption) over
all GPUs for the whole span from first submission to last completion. <b>Bounded
slowdown</b> is completion time over run time (runs under 10 s counted as 10 s); 1 is no
wait at all.</p>
<p><b>Fairness (Jain)</b> compares each project's share of the GPU time with its entitlement:
1.0 means every project got exactly its entitled share; lower means some got more than
others. <b>Max share gap</b> is the largest difference between a project's share and its
entitlement, in percentage points.</p>
<p>Money, when modelled, is the subsidy the fund pays at the simulated usage; the burn-down
chart forecasts when the fund would run out at that rate.</p>
</div>

<h2>Summary</h2>
<div class="scroll"><table>
<thead><tr><th>metric</th>{% for p in policies %}<th>{{ p }}</th>{% endfor %}</tr></thead>
<tbody>
{% for label, cells in rows %}<tr><td>{{ label }}</td>
{%- for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table></div>

<h2>Charts</h2>
{% for alt, uri in images %}<img alt="{{ alt }}" src="{{ uri }}">
{% endfor %}
<h2>Projects: share of GPU time against entitlement</h2>
{% for policy, shares in project_tables %}<h3>{{ policy }}</h3>
<div class="scroll"><table>
<thead><tr><th>project</th><th>entitlement</th><th>share</th><th>gap</th><th>GPU-hours</th>
<th>jobs</th></tr></thead>
<tbody>
{% for s in shares %}<tr><td>{{ s.project }}</td><td>{{ s.entitlement }}</td><td>{{ s.share }}</td>
<td>{{ s.gap }}</td><td>{{ s.gpu_hours }}</td><td>{{ s.jobs }}</td></tr>
{% endfor %}</tbody>
</table></div>
{% endfor %}
</body>
</html>
"""

_IMAGE_ALT = {
    "utilisation.png": "Cluster utilisation over time, per policy",
    "wait_cdf.png": "Cumulative distribution of waiting times, per policy",
    "fund_burndown.png": "Cumulative subsidy spent against the fund, per policy",
}


def _parameters(results: Sequence[SimResult], summaries: Summaries) -> list[tuple[str, str]]:
    traces = sorted({r.trace_name for r in results})
    gpus = sorted({r.total_gpus for r in results})
    params = [
        ("trace", ", ".join(traces) or "—"),
        ("GPUs", ", ".join(f"{g:,}" for g in gpus) or "—"),
        ("jobs", ", ".join(sorted({f"{len(r.records):,}" for r in results})) or "—"),
    ]
    starts = sorted({r.start_time for r in results if r.start_time is not None})
    if starts:
        params.append(("trace starts", starts[0].isoformat(sep=" ", timespec="minutes")))
    spans = [s.get("makespan_s") for s in summaries.values()]
    known = [float(v) for v in spans if isinstance(v, int | float)]
    if known:
        params.append(("span simulated", fmt_duration(max(known))))
    money = next((r.money for r in results if r.money is not None), None)
    if money is not None:
        params.append(("subsidy fund", f"HK$ {format_cents(money.fund_total_cents)}"))
        params.append(("price", f"HK$ {format_cents(money.cents_per_gpu_hour)} per GPU-hour"))
        params.append(("subsidy rate", f"{money.rate_bp / 100:g}%"))
    return params


def _share_rows(result: SimResult) -> list[dict[str, str]]:
    rows = []
    for s in project_shares(result):
        share, entitled = float(s["share"]), float(s["entitlement"])
        rows.append(
            {
                "project": str(s["project"]),
                "entitlement": f"{100 * entitled:.1f}%",
                "share": f"{100 * share:.1f}%",
                "gap": f"{100 * (share - entitled):+.1f} pp",
                "gpu_hours": f"{float(s['gpu_hours']):,.1f}",
                "jobs": f"{int(s['jobs']):,}",
            }
        )
    return rows


def _write_html(
    results: Sequence[SimResult],
    summaries: Summaries,
    out_dir: PathLike,
    pngs: Mapping[str, bytes],
) -> Path:
    env = Environment(autoescape=True, trim_blocks=False, lstrip_blocks=False)
    template = env.from_string(_TEMPLATE)
    images = [
        (_IMAGE_ALT[name], "data:image/png;base64," + base64.b64encode(data).decode("ascii"))
        for name, data in pngs.items()
    ]
    html = template.render(
        trace=", ".join(sorted({r.trace_name for r in results})),
        policies=list(summaries),
        parameters=_parameters(results, summaries),
        rows=_table_rows(summaries),
        images=images,
        project_tables=[(r.policy, _share_rows(r)) for r in results],
    )
    p = _prepare(Path(out_dir) / "report.html")
    p.write_text(html, encoding="utf-8")
    return p


def write_html(results: Sequence[SimResult], summaries: Summaries, out_dir: PathLike) -> Path:
    """``out_dir/report.html``: one self-contained page (plots embedded as data URIs)."""
    return _write_html(results, summaries, out_dir, _render_pngs(results))


# -- everything -------------------------------------------------------------------------------


def summaries_of(results: Sequence[SimResult]) -> dict[str, dict[str, Value]]:
    """``{policy: summarise(result)}`` in the order given; policies must be distinct."""
    seen: set[str] = set()
    for r in results:
        if r.policy in seen:
            raise ValueError(f"policy {r.policy!r} appears twice; give each run its own name")
        seen.add(r.policy)
    return {r.policy: summarise(r) for r in results}


def write_all(results: Sequence[SimResult], out_dir: PathLike) -> dict[str, Path]:
    """Every report file in ``out_dir`` (see ``FILES``); returns ``{file name: path}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = summaries_of(results)
    paths = {
        "summary.json": write_json(summaries, out / "summary.json"),
        "summary.csv": write_csv_summary(summaries, out / "summary.csv"),
        "jobs.csv": write_csv_jobs(results, out / "jobs.csv"),
    }
    pngs = _render_pngs(results)
    for name, data in pngs.items():
        paths[name] = out / name
        paths[name].write_bytes(data)
    paths["report.html"] = _write_html(results, summaries, out, pngs)
    return paths
