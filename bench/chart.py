"""Draws bench/results/throughput.png from latest.json: requests per second, direct vs through
Doorman, for each protocol generation and concurrency, with the ratio on each pair."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

report = json.load(open(sys.argv[1]))
rows = report["rows"]
labels = [f"{r['generation']}\nc={r['concurrency']}" for r in rows]
direct = [r["direct"]["rps"] for r in rows]
doorman = [r["doorman"]["rps"] for r in rows]
x = range(len(rows))
fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4.2), dpi=120)
w = 0.38
ax.bar([i - w / 2 for i in x], direct, w, label="direct", color="#8a99a8")
bars = ax.bar([i + w / 2 for i in x], doorman, w, label="through Doorman (local mode)", color="#2f6f9f")
for b, r in zip(bars, rows):
    ax.annotate(f"{r['throughput_ratio'] * 100:.0f}%", (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center", va="bottom", fontsize=8)
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
