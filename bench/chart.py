"""Draws bench/results/throughput.png from latest.json: requests per second, direct vs through
the bare relay (the reference) and Doorman in each mode (local, signed in, signed in + layer 2),
for each protocol generation and concurrency, with the ratio to direct on each bar."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

report = json.load(open(sys.argv[1]))
rows = report["rows"]
# One group per (generation, concurrency); its rows share the direct figures of the same rounds.
groups: dict[tuple[str, int], list[dict]] = {}
for r in rows:
    groups.setdefault((r["generation"], r["concurrency"]), []).append(r)
modes = list(dict.fromkeys(r.get("mode", "local") for r in rows))
colors = ["#2f6f9f", "#c2703d", "#5a9f4f", "#8f5fa8", "#b0b0b0"]
labels = [f"{g}\nc={c}" for g, c in groups]
n = 1 + len(modes)
w = 0.8 / n
fig, ax = plt.subplots(figsize=(max(6, 0.55 * n * len(groups) + 2), 4.4), dpi=120)
x = range(len(groups))
ax.bar([i - 0.4 + w / 2 for i in x], [g[0]["direct"]["rps"] for g in groups.values()], w,
       label="direct", color="#8a99a8")
for k, mode in enumerate(modes):
    xs, ys, ratios = [], [], []
    for i, g in enumerate(groups.values()):
        row = next((r for r in g if r.get("mode", "local") == mode), None)
        if row is not None:
            xs.append(i - 0.4 + w / 2 + (k + 1) * w)
            ys.append(row["doorman"]["rps"])
            ratios.append(row["throughput_ratio"])
    reference = mode.startswith("bare")
    bars = ax.bar(xs, ys, w, label=mode if reference else f"through Doorman: {mode}",
                  color="#c9c9c9" if reference else colors[k % len(colors)],
                  hatch="//" if reference else None)
    for b, ratio in zip(bars, ratios):
        ax.annotate(f"{ratio * 100:.0f}%", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=7)
ax.set_xticks(list(x))
ax.set_xticklabels(labels, fontsize=8)
ax.set_ylabel("tools/call per second")
title = "Doorman vs direct, echo tool, this machine"
if report.get("smoke"):
    title += " (SMOKE RUN: not a measurement)"
ax.set_title(title, fontsize=10)
ax.legend(fontsize=8)
ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()
fig.savefig(sys.argv[2])
print(f"chart: {sys.argv[2]}")
