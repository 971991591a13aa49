"""nginx (Debian's /usr/sbin/nginx, installed by scripts/setup-test-env) as the load balancer of
the cluster tests: round-robin over Doorman nodes, no stickiness, keep-alive to the nodes,
streaming (no buffering) for SSE, `X-Forwarded-For` set. Each instance runs in the foreground
with its own prefix directory under tests/artifacts/nginx/NAME (config, logs, temp files); the
access log records which node served each request (`upstream=`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx2

from procs import ARTIFACTS, free_port

NGINX = Path("/usr/sbin/nginx")


class Nginx:
    def __init__(self, name: str, backends: list[int], port: int | None = None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.dir = ARTIFACTS / "nginx" / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in backends)
        # Running as root (CI), workers would switch to `nobody` and lose the prefix directory.
        user = "user root;" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
error_log {self.dir}/error.log warn;
pid {self.dir}/nginx.pid;
events {{ worker_connections 512; }}
http {{
  log_format balanced '$request_method $uri $status upstream=$upstream_addr';
  access_log {self.dir}/access.log balanced;
  client_body_temp_path {self.dir}/body;
  proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fastcgi;
  uwsgi_temp_path {self.dir}/uwsgi;
  scgi_temp_path {self.dir}/scgi;
  upstream doorman {{
{servers}
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://doorman;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
""")
        self.log = open(self.dir / "stderr.log", "w")
        self.proc = subprocess.Popen([str(NGINX), "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                                      "-g", "daemon off;"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx2.get(f"{self.base}/healthz", timeout=1)
                break
            except httpx2.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {(self.dir / 'stderr.log').read_text()}"
                                         f"{(self.dir / 'error.log').read_text() if (self.dir / 'error.log').exists() else ''}")
                time.sleep(0.05)

    def served_by(self) -> list[str]:
        """The node address that served each request so far, in order."""
        text = (self.dir / "access.log").read_text() if (self.dir / "access.log").exists() else ""
        return re.findall(r"upstream=(\S+)", text)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
