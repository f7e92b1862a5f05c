#!/usr/bin/env python3
"""Summarises the sweeps of bench/search_quality.sh from its results database.

   python3 bench/search_quality.py RESULTS.db [WALL_TIMES]

Per sweep (named after its strategy): trials (cached ones included: a trial another sweep had
already evaluated still counts), the lowest energy and the smallest weights among trials within
the error margin, and the hypervolume of (top-1 up, weight bits down) against the reference point
(10 % top-1, the fp32 weight size) divided by the grid sweep's. Sizes and energies are the
workers' cost model's, which counts integer formats' scales and zero points with the weights
(docs/COST_MODEL.md; databases from before 2026-12-03 hold figures without them). For hawq sweeps, the predicted
top-1 in each hawq trial's label against the measured one, and (Hessian sensitivities) the
predicted loss increase against the measured increase of the evaluation loss over the baseline's.
"""
import re
import sqlite3
import sys

REF_TOP1 = 0.10


def hypervolume(points, ref_size):
    """Area dominated by (top1, size) points (top1 maximised, size minimised) within the box
    [0, ref_size] x [REF_TOP1, 1], normalised by the box."""
    best = 0.0
    area = 0.0
    pts = sorted(p for p in points if p[1] < ref_size and p[0] > REF_TOP1)
    pts = sorted(pts, key=lambda p: p[1])
    for i, (top1, size) in enumerate(pts):
        best = max(best, top1)
        nxt = pts[i + 1][1] if i + 1 < len(pts) else ref_size
        area += (nxt - size) * (best - REF_TOP1)
    return area / (ref_size * (1.0 - REF_TOP1))


def main():
    db = sqlite3.connect(sys.argv[1])
    walls = {}
    if len(sys.argv) > 2:
        for line in open(sys.argv[2]):
            name, seconds = line.split()
            walls[name] = float(seconds)
    sweeps = db.execute("SELECT id, name, error_margin FROM sweeps ORDER BY id").fetchall()
    rows = {}
    for sweep_id, name, margin in sweeps:
        trials = db.execute(
            "SELECT stage, label, state, top1, size_bits, energy_pj, baseline_top1, within_margin, "
            "loss, trial_id FROM trial_summary WHERE sweep_id = ?", (sweep_id,)).fetchall()
        ok = [t for t in trials if t[2] == "succeeded"]
        base = [t for t in ok if t[0] == "baseline"][0]
        fp32_size = base[4]
        within = [t for t in ok if t[7]]
        # The hawq "hessian" trial is a second fp32 evaluation (it computes the sensitivities).
        quantized = [t for t in within if t[0] not in ("baseline", "hessian")]
        rows[name] = {
            "trials": len(trials),
            "failed": sum(t[2] == "failed" for t in trials),
            "energy": min((t[5] for t in quantized), default=None),
            "size": min((t[4] for t in quantized), default=None),
            "hv": hypervolume([(t[3], t[4]) for t in ok], fp32_size),
            "baseline": base[3],
            "margin": margin,
            "base_loss": base[8],
            "hawq": [(t[1], t[3]) for t in ok if t[0] in ("hawq", "hawq_refine")],
            "losses": [(t[1], t[8]) for t in ok if t[0] in ("hawq", "hawq_refine")],
        }
    grid = rows.get("grid")
    print("| strategy | trials | wall (s) | lowest energy within the margin "
          "| smallest weights within the margin | hypervolume | / grid's |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        energy = "-" if r["energy"] is None else "%.2f uJ" % (r["energy"] / 1e6)
        size = "-" if r["size"] is None else "{:,} bits".format(r["size"])
        ratio = "%.3f" % (r["hv"] / grid["hv"]) if grid else "-"
        trials = str(r["trials"]) + (" (%d failed)" % r["failed"] if r["failed"] else "")
        if grid and name != "grid":
            trials += " (%.0f %%)" % (100.0 * r["trials"] / grid["trials"])
        wall = "%.0f" % walls[name] if name in walls else "-"
        print("| %s | %s | %s | %s | %s | %.4f | %s |" % (name, trials, wall, energy, size,
                                                       r["hv"], ratio))
    for name, r in rows.items():
        if not r["hawq"]:
            continue
        pairs = []
        for label, top1 in r["hawq"]:
            m = re.search(r"predicted top-1 ([0-9.]+)%", label)
            if m:
                pairs.append((float(m.group(1)) / 100.0, top1))
        losses = []
        for label, loss in r["losses"]:
            m = re.search(r"predicted loss \+([0-9.]+) nats", label)
            if m and loss is not None:
                losses.append((float(m.group(1)), loss - r["base_loss"]))
        if losses:
            ratios = sorted(meas / pred for pred, meas in losses if pred > 0)
            print()
            print("%s, predicted loss increase (Hessian weights + measured activations, summed "
                  "over layers) against the measured increase of the evaluation loss over %d "
                  "configs: measured / predicted median %.2f (min %.2f, max %.2f); pairs "
                  "(predicted, measured nats): %s."
                  % (name, len(losses), ratios[len(ratios) // 2] if ratios else 0.0,
                     ratios[0] if ratios else 0.0, ratios[-1] if ratios else 0.0,
                     ", ".join("(%.4f, %.4f)" % p for p in sorted(losses))))
        if not pairs:
            continue
        base, margin = r["baseline"], r["margin"] / 100.0
        err = [100.0 * (meas - pred) for pred, meas in pairs]
        near = [(p, m) for p, m in pairs if base - p <= margin]
        near_err = [100.0 * (m - p) for p, m in near]
        agree = sum((base - m <= margin + 1e-9) for p, m in near)
        print()
        print("%s, predicted against measured top-1 over its %d "
              "configs: measured - predicted = %+.2f pp on average (min %+.2f, max %+.2f), mean "
              "absolute %.2f pp; of the %d configs predicted within the margin, %d measured within "
              "it (mean error there %+.2f pp)."
              % (name, len(pairs), sum(err) / len(err), min(err), max(err),
                 sum(abs(e) for e in err) / len(err), len(near), agree,
                 sum(near_err) / len(near_err) if near_err else 0.0))


if __name__ == "__main__":
    main()
