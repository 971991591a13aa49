"""The official conformance suite, run directly against server-everything and through Doorman.

Every check that passes directly must pass through Doorman. The direct run's failures are the
baseline in tests/conformance/expected-failures.yml (the suite itself checks it is exact). The
2026-07-28 requirement set runs both ways too, and the same rule holds: server-everything speaks only
the stateful revisions, so directly it passes few of those checks, and through Doorman its own
stateless front answers them. A summary is written
to tests/artifacts/conformance.md."""

import json
import re
import subprocess
from pathlib import Path

from conftest import Doorman
from procs import ARTIFACTS, NODE, PEERS, ROOT

CONFORMANCE = PEERS / "node_modules" / ".bin" / "conformance"
BASELINE = ROOT / "tests" / "conformance" / "expected-failures.yml"


def run_suite(url: str, out: Path, *extra: str) -> tuple[int, dict[str, str]]:
    """Runs the suite; returns its exit code and {"scenario:check": status}."""
    proc = subprocess.run([str(NODE), str(CONFORMANCE), "server", "--url", url, "-o", str(out), *extra],
                          capture_output=True, text=True, timeout=600)
    (out / "output.txt").write_text(proc.stdout + proc.stderr)
    checks = {}
    for d in sorted(out.iterdir()):
        if not d.is_dir() or not (d / "checks.json").exists():
            continue
        scenario = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", d.name.removeprefix("server-"))
        for c in json.loads((d / "checks.json").read_text()):
            checks[f"{scenario}:{c['id']}"] = c["status"]
    return proc.returncode, checks


def tally(checks: dict[str, str]) -> str:
    ok = sum(s == "SUCCESS" for s in checks.values())
    bad = sum(s == "FAILURE" for s in checks.values())
    return f"{ok} passed, {bad} failed"


def test_every_check_passing_directly_passes_through_doorman(everything, tmp_path):
    base = ARTIFACTS / "conformance"
    direct_code, direct = run_suite(everything.url, base / "direct", "--expected-failures", str(BASELINE))
    assert direct, "the suite ran no checks"
    assert direct_code == 0, f"the direct run's failures differ from {BASELINE.name}: see {base / 'direct' / 'output.txt'}"
    _, direct_modern = run_suite(everything.url, base / "direct-2026-07-28", "--requirements", "2026-07-28")

    d = Doorman("doorman-conformance", [{"name": "everything", "url": everything.url}])
    try:
        _, through = run_suite(d.url, base / "through-doorman")
        _, modern = run_suite(d.url, base / "through-doorman-2026-07-28", "--requirements", "2026-07-28")
    finally:
        d.stop()

    # INFO is the suite's neutral verdict (e.g. "JSON responses; SSE is optional"), not a failure.
    lost = sorted(k for k, s in direct.items() if s == "SUCCESS" and through.get(k) not in ("SUCCESS", "INFO"))
    lost_modern = sorted(k for k, s in direct_modern.items()
                         if s == "SUCCESS" and modern.get(k) not in ("SUCCESS", "INFO"))
    softened = sorted(k for k, s in direct.items() if s == "SUCCESS" and through.get(k) == "INFO")
    gained = sorted(k for k, s in through.items() if s == "SUCCESS" and direct.get(k) == "FAILURE")
    summary = [
        "# Conformance: server scenarios (@modelcontextprotocol/conformance 0.2.0-alpha.12)",
        "",
        f"- direct against server-everything: {tally(direct)}",
        f"- through Doorman: {tally(through)}",
        f"- direct against server-everything, --requirements 2026-07-28: {tally(direct_modern)}",
        f"- through Doorman, --requirements 2026-07-28: {tally(modern)}",
        f"- 2026-07-28: passing directly but not through Doorman: {lost_modern or 'none'}",
        f"- passing directly but not through Doorman: {lost or 'none'}",
        f"- failing directly but passing through Doorman: {gained or 'none'}",
        f"- passing directly, informational through Doorman: {softened or 'none'}",
        "",
        "## 2026-07-28 failures through Doorman",
        *[f"- {k}" for k, s in sorted(modern.items()) if s == "FAILURE"],
    ]
    (base / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    assert not lost, f"checks passing directly but not through Doorman: {lost}"
    assert not lost_modern, f"2026-07-28 checks passing directly but not through Doorman: {lost_modern}"
    # The stateless front's own rules, which no upstream can answer for Doorman.
    for check in ("http-header-validation", "caching", "server-stateless:sep-2575-server-implements-discover"):
        matching = {k: s for k, s in modern.items() if k == check or k.startswith(check + ":")}
        assert matching and all(s != "FAILURE" for s in matching.values()), (check, matching)
