#!/usr/bin/python3
"""Renders the provisioned Grafana dashboards (deploy/grafana/dashboards/*.json) to PNG from a
real Prometheus, panel by panel, the way Grafana would draw them: every target's PromQL
expression through /api/v1/query_range, legends from each target's legendFormat, units from the
panel. Used for the pictures of docs/DEPLOY.md, where Grafana itself cannot run.

  python3 deploy/grafana/render_dashboards.py --prometheus http://127.0.0.1:9090 \
      --start 1796290000 --end 1796290300 --rate-interval 10s --out docs/images

Needs only Debian's python3-matplotlib.
"""
import argparse
import datetime
import json
import math
import os
import re
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def query_range(prometheus, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def legend(fmt, labels):
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def scale(unit):
    """A divisor and axis label for the panel's Grafana unit."""
    return {
        "bytes": (2**20, "MiB"),
        "percentunit": (0.01, "%"),
        "s": (1, "seconds"),
        "ops": (1, "per second"),
        "reqps": (1, "requests/s"),
        "joule": (1e-6, "µJ"),
    }.get(unit, (1, ""))


def draw_panel(ax, panel, series_by_target, rate_interval):
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    divisor, label = scale(unit)
    drawn = 0
    for target, series in series_by_target:
        for s in series:
            times = [datetime.datetime.fromtimestamp(float(t), datetime.timezone.utc)
                     for t, _ in s["values"]]
            values = [float(v) / divisor if v not in ("NaN", "+Inf", "-Inf") else math.nan
                      for _, v in s["values"]]
            ax.plot(times, values, linewidth=1.4,
                    label=legend(target.get("legendFormat", ""), s["metric"]))
            drawn += 1
    ax.set_title(panel["title"], fontsize=10, loc="left")
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.grid(alpha=0.3)
    if drawn == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    elif drawn <= 10:
        ax.legend(fontsize=6.5, loc="best")
    else:
        ax.text(0.01, 0.97, f"{drawn} series", transform=ax.transAxes, fontsize=7, va="top")


def draw_table(ax, panel, series_by_target):
    rows = []
    hidden = {"__name__", "job", "instance"}
    for _, series in series_by_target:
        for s in series:
            rows.append({k: v for k, v in s["metric"].items() if k not in hidden})
    ax.axis("off")
    ax.set_title(panel["title"] + " (at the end of the window)", fontsize=10, loc="left")
    if not rows:
        ax.text(0.5, 0.5, "no data", ha="center", va="center")
        return
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "sweep", k))
    rows.sort(key=lambda r: int(r.get("sweep", "0")))
    table = ax.table(cellText=[[r.get(c, "") for c in columns] for r in rows],
                     colLabels=columns, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)


def render(dashboard_path, prometheus, start, end, step, rate_interval, out_dir):
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    panels = dashboard["panels"]
    columns = 3
    graph_panels = [p for p in panels if p["type"] != "table"]
    table_panels = [p for p in panels if p["type"] == "table"]
    graph_rows = math.ceil(len(graph_panels) / columns)
    rows = graph_rows + len(table_panels)
    heights = [0.45] * len(table_panels) + [1] * graph_rows
    fig = plt.figure(figsize=(16, 3.4 * sum(heights)))
    grid = fig.add_gridspec(rows, columns, hspace=0.55, wspace=0.25, height_ratios=heights)
    row = 0
    for panel in table_panels:
        ax = fig.add_subplot(grid[row, :])
        draw_table(ax, panel, fetch(panel, prometheus, end, end, step, rate_interval))
        row += 1
    for i, panel in enumerate(graph_panels):
        ax = fig.add_subplot(grid[row + i // columns, i % columns])
        draw_panel(ax, panel, fetch(panel, prometheus, start, end, step, rate_interval),
                   rate_interval)
    fig.suptitle(f'{dashboard["title"]}  —  {dashboard["description"]}', fontsize=12, x=0.01,
                 ha="left")
    name = os.path.splitext(os.path.basename(dashboard_path))[0]
    path = os.path.join(out_dir, f"dashboard-{name}.png")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def fetch(panel, prometheus, start, end, step, rate_interval):
    out = []
    for target in panel["targets"]:
        expr = target["expr"].replace("$__rate_interval", rate_interval).replace("$sweep", ".*")
        out.append((target, query_range(prometheus, expr, start, end, step)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--start", type=float, required=True, help="unix seconds")
    parser.add_argument("--end", type=float, required=True, help="unix seconds")
    parser.add_argument("--step", default="2", help="seconds between points")
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval stands for")
    parser.add_argument("--dashboards", default=os.path.join(HERE, "dashboards"))
    parser.add_argument("--out", required=True, help="folder for dashboard-NAME.png")
    args = parser.parse_args()
    if args.end <= args.start:
        sys.exit("render_dashboards: --end must be after --start")
    os.makedirs(args.out, exist_ok=True)
    for name in sorted(os.listdir(args.dashboards)):
        if name.endswith(".json"):
            print(render(os.path.join(args.dashboards, name), args.prometheus, args.start,
                         args.end, args.step, args.rate_interval, args.out))


if __name__ == "__main__":
    main()
