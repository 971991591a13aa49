"""What docs/DEPLOY.md tells operators to do, done: back up a running Doorman and restore it
into a new node, on SQLite (`doorman backup`) and on PostgreSQL (pg_dump / pg_restore), and
the person's connections work there without connecting again; the systemd unit in deploy/ is
one systemd accepts."""

from __future__ import annotations

import glob
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest

from conftest import DOORMAN_BIN, fresh_postgres_url, modern_headers, modern_request
from oauth import add_user
from procs import ROOT
from test_layer2 import PASSWORD, Env, connect_once, doorman_token, start_env


def notes_account(e: Env, token: str) -> str:
    """Who Notes says the person is, through Doorman (a stateless call)."""
    r = httpx2.post(e.d.url, headers=modern_headers("tools/call", "notes_whoami") | {"Authorization": f"Bearer {token}"},
                    json=modern_request("tools/call", {"name": "notes_whoami", "arguments": {}}), timeout=30)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert not result.get("isError"), result
    return result["content"][0]["text"]


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"{name} not found (scripts/setup-test-env installs PostgreSQL)"
    return found[-1]


def test_a_sqlite_backup_restored_into_a_new_node_keeps_every_connection(tmp_path):
    old = start_env("deploy-sqlite", binding="user")
    try:
        add_user(old.d, "alice", PASSWORD, email="alice@corp.example")
        token = doorman_token(old, "alice")
        connect_once(old, token)
        before = notes_account(old, token)
        backup = tmp_path / "doorman-backup.db"
        out = subprocess.run([str(DOORMAN_BIN), "backup", str(backup), "--config", str(old.d.config)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "keep a copy of it apart" in out.stdout, out.stdout + out.stderr
        # Refuses to overwrite a file.
        again = subprocess.run([str(DOORMAN_BIN), "backup", str(backup), "--config", str(old.d.config)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "exists already" in again.stderr
        # A new machine: the backup and the key ring (kept apart), the same public URL.
        restored = tmp_path / "restored"
        restored.mkdir()
        shutil.copy(backup, restored / "doorman.db")
        shutil.copy(old.d.dir / "data" / "keyring", restored / "keyring")
        port = old.d.port
        old.d.stop()
        new = start_env("deploy-sqlite-new", binding="user", port=port, idp=old.idp, notes=old.notes,
                        server={"data_dir": str(restored)})
        try:
            assert notes_account(new, token) == before
        finally:
            new.d.stop()
    finally:
        old.stop()


def test_a_postgres_dump_restored_into_a_new_database_keeps_every_connection(tmp_path):
    import secrets
    ring = {"DOORMAN_KEY_RING": f"k1 {secrets.token_urlsafe(32)}\n"}
    url = fresh_postgres_url()
    old = start_env("deploy-pg", binding="user", database_url=url, env=ring)
    try:
        add_user(old.d, "alice", PASSWORD, email="alice@corp.example")
        token = doorman_token(old, "alice")
        connect_once(old, token)
        before = notes_account(old, token)
        parts = urlsplit(url)
        conn = ["-h", parts.hostname, "-p", str(parts.port), "-U", parts.username or "postgres"]
        dump = tmp_path / "doorman.dump"
        subprocess.run([pg_bin("pg_dump"), *conn, "-Fc", "-f", str(dump), parts.path.lstrip("/")], check=True,
                       capture_output=True, timeout=120)
        target = fresh_postgres_url()
        subprocess.run([pg_bin("pg_restore"), *conn, "--no-owner", "-d", urlsplit(target).path.lstrip("/"), str(dump)],
                       check=True, capture_output=True, timeout=120)
        port = old.d.port
        old.d.stop()
        new = start_env("deploy-pg-new", binding="user", port=port, idp=old.idp, notes=old.notes,
                        database_url=target, env=ring)
        try:
            assert notes_account(new, token) == before
        finally:
            new.d.stop()
    finally:
        old.stop()


def test_the_systemd_unit_is_one_systemd_accepts():
    unit = ROOT / "deploy" / "doorman.service"
    text = unit.read_text()
    for line in ("ExecStart=/usr/local/bin/doorman serve --config /etc/doorman/doorman.toml", "User=doorman",
                 "NoNewPrivileges=true", "Restart=on-failure", "KillSignal=SIGTERM"):
        assert line in text, line
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here; the unit's lines were checked above")
    out = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    # The only acceptable complaint is about this machine: no doorman installed here.
    problems = [l for l in out.stderr.splitlines()
                if l.strip() and "Command /usr/local/bin/doorman is not executable" not in l]
    assert not problems, out.stderr
