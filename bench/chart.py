"""Draws bench/results/throughput.png from latest.json: requests per second, direct vs through
the bare relay (the reference) and Doorman in each mode (local, signed in, signed in + layer 2),
for each protocol generation and concurrency, with the ratio to direct on each bar.

Peer gateways (rows with "peer": true) serve 30-150 times fewer calls than Doorman: on the same
linear scale their bars would not show. When the report has them, a second panel below compares
them with the relay and Doorman signed in, on a logarithmic scale."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

report = json.load(open(sys.argv[1]))
peer_rows = [r for r in report["rows"] if r.get("peer")]
rows = [r for r in report["rows"] if not r.get("peer")]
# One group per (generation, concurrency); its rows share the direct figures of the same rounds.
groups: dict[tuple[str, int], list[dict]] = {}
for r in rows:
    groups.setdefault((r["generation"], r["concurrency"]), []).append(r)
modes = list(dict.fromkeys(r.get("mode", "local") for r in rows))
colors = ["#2f6f9f", "#c2703d", "#5a9f4f", "#8f5fa8", "#b0b0b0"]
labels = [f"{g}\nc={c}" for g, c in groups]
n = 1 + len(modes)
w = 0.8 / n
width = max(6, 0.55 * n * len(groups) + 2)
if peer_rows:
    fig, (ax, peer_ax) = plt.subplots(2, 1, figsize=(width, 8.2), dpi=120,
                                      gridspec_kw={"height_ratios": [4.4, 3.4]})
else:
    fig, ax = plt.subplots(figsize=(width, 4.4), dpi=120)
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

if peer_rows:
    # Only the groups where peers ran; beside them the relay and Doorman signed in, same rounds.
    compared = ["bare HTTP relay (reference)", "signed in (token check)"]
    peer_colors = ["#d1495b", "#edae49", "#00798c"]
    peer_groups = list(dict.fromkeys((r["generation"], r["concurrency"]) for r in peer_rows))
    peer_modes = list(dict.fromkeys(r["mode"] for r in peer_rows))
    series = compared + peer_modes
    pw = 0.8 / len(series)
    for k, mode in enumerate(series):
        xs, ys = [], []
        for i, key in enumerate(peer_groups):
            row = next((r for r in groups.get(key, []) + peer_rows
                        if (r["generation"], r["concurrency"]) == key and r["mode"] == mode), None)
            if row is not None:
                xs.append(i - 0.4 + pw / 2 + k * pw)
                ys.append(row["doorman"]["rps"])
        if not xs:
            continue
        reference = mode.startswith("bare")
        if mode in peer_modes:
            label, color = mode, peer_colors[peer_modes.index(mode) % len(peer_colors)]
        elif reference:
            label, color = mode, "#c9c9c9"
        else:
            # The same colour as in the panel above.
            label, color = f"Doorman: {mode}", colors[modes.index(mode) % len(colors)]
        bars = peer_ax.bar(xs, ys, pw, label=label, color=color, hatch="//" if reference else None)
        for b in bars:
            peer_ax.annotate(f"{b.get_height():.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                             ha="center", va="bottom", fontsize=7)
    peer_ax.set_yscale("log")
    peer_ax.set_ylim(bottom=1)
    peer_ax.set_xticks(range(len(peer_groups)))
    peer_ax.set_xticklabels([f"{g}\nc={c}" for g, c in peer_groups], fontsize=8)
    peer_ax.set_ylabel("tools/call per second (log)")
    peer_ax.set_title("Peer gateways, same run, same echo servers", fontsize=10)
    peer_ax.legend(fontsize=8)
    peer_ax.spines[["top", "right"]].set_visible(False)
fig.tight_layout()
fig.savefig(sys.argv[2])
print(f"chart: {sys.argv[2]}")
