#!/usr/bin/env python3
"""Peak memory of a Doorman under a flood of wrong passwords: N concurrent sign-in POSTs for one
account (each an argon2 check of 19 MiB unless refused first), then the right password.

    tests/.venv/bin/python bench/sign_in_flood.py [--posts 40] [--bin target/debug/doorman ...]

Prints, per binary: the resident set before and its peak after (VmRSS, VmHWM from
/proc/PID/status), how many posts were checked (401) or refused early (429), and whether the
right password still signed in. Several `--bin`s are measured one after another in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def measure(binary: str, posts: int) -> dict:
    os.environ["DOORMAN_BIN"] = binary
    import importlib

    import conftest
    importlib.reload(conftest)
    import oauth
    importlib.reload(oauth)
    import httpx2

    redirect = "https://flood.example/cb"
    d = oauth.accounts_doorman("flood", [], sign_in={"max_failed_sign_ins": 5, "lockout": "10m"},
                               extra_toml=f'\n[[sign_in.clients]]\nclient_id = "flood"\nname = "Flood"\n'
                                          f'redirect_uris = ["{redirect}"]\n')
    try:
        oauth.add_user(d, "alice", "the-right-password-123")
        pid = d.proc.pid
        # The process group leader is the binary itself (Proc starts it directly).
        before = status_kib(pid, "VmRSS")

        def prepared() -> tuple:
            """A browser at the sign-in form of its own authorization request."""
            jar = httpx2.Client(timeout=300, follow_redirects=False)
            _, challenge = oauth.pkce()
            r = jar.get(f"{d.base}/oauth/authorize", params={
                "response_type": "code", "client_id": "flood", "redirect_uri": redirect,
                "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"})
            page = jar.get(f"{d.base}{r.headers['location']}")
            form = next(f for f in oauth.forms_of(page.text) if "password" in f.fields)
            return jar, form

        browsers = [prepared() for _ in range(posts + 1)]
        gate = threading.Barrier(posts)

        def post(i: int, password: str, together: bool = True) -> int:
            jar, form = browsers[i]
            if together:
                gate.wait()  # every POST leaves at once
            return jar.post(f"{d.base}/sign-in", data={**form.fields, "username": "alice",
                                                      "password": password}).status_code

        with ThreadPoolExecutor(max_workers=posts) as pool:
            statuses = list(pool.map(lambda i: post(i, f"wrong-{i}"), range(posts)))
        right = post(posts, "the-right-password-123", together=False)
        for jar, _ in browsers:
            jar.close()
        return {
            "binary": binary,
            "rss_before_mib": before / 1024,
            "peak_mib": status_kib(pid, "VmHWM") / 1024,
            "checked": statuses.count(401),
            "refused_early": statuses.count(429),
            "right_password_after": right,
        }
    finally:
        d.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--posts", type=int, default=40)
    ap.add_argument("--bin", action="append", default=[])
    args = ap.parse_args()
    binaries = args.bin or [str(ROOT / "target" / "debug" / "doorman")]
    print(f"{'binary':<40} {'rss before':>10} {'peak':>8} {'checked':>8} {'refused':>8} {'right pw after':>15}")
    for b in binaries:
        m = measure(b, args.posts)
        print(f"{b:<40} {m['rss_before_mib']:>8.0f} MiB {m['peak_mib']:>5.0f} MiB {m['checked']:>8} "
              f"{m['refused_early']:>8} {m['right_password_after']:>15}")


if __name__ == "__main__":
    main()
