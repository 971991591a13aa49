//! The processes the benchmark runs: upstreams, Doorman, and what is measured about Doorman itself.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The binaries built beside this one (`cargo build -p doorman -p doorman-bench`).
pub struct Binaries {
    doorman: PathBuf,
    echo: PathBuf,
    relay: PathBuf,
}

impl Binaries {
    pub fn beside_this_executable() -> anyhow::Result<Self> {
        let dir = std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let b = Self {
            // Another build of Doorman, for comparing two builds on the same machine (the relay
            // row of each run is the common reference).
            doorman: std::env::var_os("DOORMAN_BENCH_DOORMAN")
                .map_or_else(|| dir.join("doorman"), PathBuf::from),
            echo: dir.join("bench-echo"),
            relay: dir.join("bench-relay"),
        };
        for p in [&b.doorman, &b.echo, &b.relay] {
            anyhow::ensure!(
                p.exists(),
                "{} is missing: build with `cargo build -p doorman -p doorman-bench`",
                p.display()
            );
        }
        Ok(b)
    }
}

/// A running child, killed when dropped.
pub struct Running {
    child: Child,
    pub port: u16,
    dir: Option<tempfile::TempDir>,
}

impl Running {
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base_url())
    }

    /// `http://127.0.0.1:PORT`: for Doorman also its issuer (`public_url` is left to default).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// CPU time the process has used so far, all threads, user and system.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(&std::fs::read_to_string(format!(
            "/proc/{}/stat",
            self.pid()
        ))?)
    }

    /// A Doorman's configuration file.
    pub fn config_path(&self) -> anyhow::Result<PathBuf> {
        Ok(self
            .dir
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("not a Doorman"))?
            .path()
            .join("doorman.toml"))
    }

    /// What a `bench-echo` counted (`GET /stats`).
    pub async fn echo_stats(&self) -> anyhow::Result<Value> {
        let body = reqwest::get(format!("{}/stats", self.base_url()))
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok(serde_json::from_slice(&body)?)
    }
}

/// The fields of a `/proc/PID/stat` line after the command name (which is in parentheses and
/// may hold spaces): index 0 is field 3, the state.
fn stat_fields(stat: &str) -> anyhow::Result<Vec<&str>> {
    let rest = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc stat"))?
        .1;
    Ok(rest.split_whitespace().collect())
}

/// User and system CPU time from a `/proc/PID/stat` line (fields 14 and 15, in clock ticks of
/// 10 ms: Linux's `USER_HZ` is 100).
fn cpu_time_of(stat: &str) -> anyhow::Result<Duration> {
    let ticks: u64 = stat_fields(stat)?
        .get(11..13)
        .ok_or_else(|| anyhow::anyhow!("short /proc stat"))?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<_, _>>()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// CPU time used so far by every live process of process group `pgid` (a peer gateway started
/// with `setsid`, with its workers), all threads, user and system. A process that exits takes
/// its time with it; the peers' workers live as long as the gateway.
pub fn group_cpu_time(pgid: u32) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    let mut members = 0;
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        // Processes only (not `self`, `thread-self`, ...).
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        // Or one that ended since the directory was listed.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Field 5, the process group.
        let in_group = stat_fields(&stat)
            .ok()
            .and_then(|f| f.get(2).and_then(|g| g.parse::<u32>().ok()))
            == Some(pgid);
        if in_group {
            total += cpu_time_of(&stat)?;
            members += 1;
        }
    }
    anyhow::ensure!(members > 0, "process group {pgid} has no process left");
    Ok(total)
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_ready(port: u16, path: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    // Under valgrind a start takes several times longer.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "nothing answered on port {port}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A `bench-echo` in `mode`, counting requests that carry `resource_token`.
pub async fn start_echo(
    bins: &Binaries,
    mode: &str,
    resource_token: &str,
) -> anyhow::Result<Running> {
    start_helper(
        &bins.echo,
        &["--mode", mode, "--resource-token", resource_token],
    )
    .await
}

/// A `bench-relay` (the bare HTTP relay, the reference point) in front of `upstream`.
pub async fn start_relay(bins: &Binaries, upstream: &Running) -> anyhow::Result<Running> {
    start_relay_in(bins, upstream, None).await
}

/// The same, run under callgrind (`cg`: where its counts go) when asked.
pub async fn start_relay_in(
    bins: &Binaries,
    upstream: &Running,
    cg: Option<&std::path::Path>,
) -> anyhow::Result<Running> {
    let upstream = format!("127.0.0.1:{}", upstream.port);
    start_helper_in(&bins.relay, &["--upstream", &upstream], cg).await
}

/// `bin`, or valgrind's callgrind running it with instrumentation off until the bench turns it
/// on (`callgrind.rs`), its counts written into `cg`.
fn command(bin: &std::path::Path, cg: Option<&std::path::Path>) -> Command {
    match cg {
        None => Command::new(bin),
        Some(dir) => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg("--instr-atstart=no")
                .arg(format!(
                    "--callgrind-out-file={}",
                    dir.join("callgrind.out.%p").display()
                ))
                .arg(bin);
            c
        }
    }
}

/// One of the bench's own servers on a free port, once it answers on `/mcp`.
async fn start_helper(bin: &std::path::Path, args: &[&str]) -> anyhow::Result<Running> {
    start_helper_in(bin, args, None).await
}

async fn start_helper_in(
    bin: &std::path::Path,
    args: &[&str],
    cg: Option<&std::path::Path>,
) -> anyhow::Result<Running> {
    let port = free_port()?;
    let child = command(bin, cg)
        .args(["--port", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_ready(port, "/mcp").await?;
    Ok(Running {
        child,
        port,
        dir: None,
    })
}

/// How the benchmark's Doorman lets people in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// `mode = "local"`: no sign-in, nothing checked on `/mcp`.
    Local,
    /// `mode = "accounts"` with the `bench` public client pre-registered: every `/mcp` request
    /// needs a bearer access token (see `signin.rs` for how the bench gets one). `durable_audit`:
    /// `[audit] durable` (the default: an answer waits until its record is stored).
    Accounts { durable_audit: bool },
}

/// One upstream of a benchmark Doorman.
pub struct UpstreamSpec<'a> {
    pub name: &'a str,
    pub port: u16,
    /// Tied to the `[[resources]]` entry [`RESOURCE`] (layer 2): Doorman injects the person's
    /// connection token into every request.
    pub tied: bool,
}

/// The resource layer-2 upstreams are tied to. Its endpoints are never contacted: the bench
/// stores the connection itself (`layer2.rs`), with no expiry, so nothing is ever refreshed.
pub const RESOURCE: &str = "bench";

/// Doorman in front of `upstreams`, with a fresh data directory.
pub async fn start_doorman(
    bins: &Binaries,
    upstreams: &[UpstreamSpec<'_>],
    sign_in: SignIn,
) -> anyhow::Result<Running> {
    start_doorman_in(bins, upstreams, sign_in, None).await
}

/// The same, run under callgrind (`cg`: where its counts go) when asked.
pub async fn start_doorman_in(
    bins: &Binaries,
    upstreams: &[UpstreamSpec<'_>],
    sign_in: SignIn,
    cg: Option<&std::path::Path>,
) -> anyhow::Result<Running> {
    start_doorman_with(bins, upstreams, sign_in, cg, "", "").await
}

/// The same, with `server` (TOML lines) added to the configuration's `[server]` table and
/// `tail` (TOML tables) at its end.
pub async fn start_doorman_with(
    bins: &Binaries,
    upstreams: &[UpstreamSpec<'_>],
    sign_in: SignIn,
    cg: Option<&std::path::Path>,
    server: &str,
    tail: &str,
) -> anyhow::Result<Running> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n{server}",
        dir.path().join("data").display()
    );
    match sign_in {
        SignIn::Local => config.push_str("[sign_in]\nmode = \"local\"\n"),
        // Tokens live 1 h by default; 2 h covers a full run with room to spare. `development`
        // only lets the resource's (never contacted) endpoints be plain http.
        SignIn::Accounts { durable_audit } => config.push_str(&format!(
            "[sign_in]\nmode = \"accounts\"\naccess_token_lifetime = \"2h\"\ndevelopment = true\n\
             [[sign_in.clients]]\nclient_id = \"{}\"\nname = \"bench\"\nredirect_uris = [\"{}\"]\n\
             [audit]\ndurable = {durable_audit}\n",
            crate::signin::CLIENT_ID,
            crate::signin::REDIRECT_URI
        )),
    }
    for up in upstreams {
        config.push_str(&format!(
            "[[upstreams]]\nname = \"{}\"\nurl = \"http://127.0.0.1:{}/mcp\"\n",
            up.name, up.port
        ));
        if up.tied {
            config.push_str(&format!("resource = \"{RESOURCE}\"\n"));
        }
    }
    if upstreams.iter().any(|u| u.tied) {
        config.push_str(&format!(
            "[[resources]]\nname = \"{RESOURCE}\"\n\
             authorization_endpoint = \"http://127.0.0.1:1/authorize\"\n\
             token_endpoint = \"http://127.0.0.1:1/token\"\nclient_id = \"bench\"\nbinding = \"user\"\n"
        ));
    }
    config.push_str(tail);
    let path = dir.path().join("doorman.toml");
    std::fs::write(&path, config)?;
    // Doorman logs at its default level (an audit line per call, as deployed) into a file.
    let log_path = dir.path().join("doorman.log");
    let child = command(&bins.doorman, cg)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()?;
    if let Err(e) = wait_ready(port, "/healthz").await {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        anyhow::bail!("{e}; Doorman's log:\n{log}");
    }
    Ok(Running {
        child,
        port,
        dir: Some(dir),
    })
}

/// Creates a local account on a running Doorman with the real CLI
/// (`doorman users add NAME --password-stdin --config FILE`).
pub async fn add_person(
    bins: &Binaries,
    doorman: &Running,
    name: &str,
    password: &str,
) -> anyhow::Result<()> {
    let config = doorman.config_path()?;
    let mut child = Command::new(&bins.doorman)
        .args(["users", "add", name, "--password-stdin", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(format!("{password}\n").as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "doorman users add {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The process's resident size (`VmRSS`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(kb * 1024)
}

/// Resident size with 0 and then each count of idle stateful sessions.
pub async fn measure_memory(bins: &Binaries, counts: &[usize]) -> anyhow::Result<Value> {
    let doorman = start_doorman(bins, &[], SignIn::Local).await?;
    let url = doorman.mcp_url();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_bytes(doorman.pid())?;
    let mut out = vec![
        json!({ "sessions": 0, "rss_bytes": base, "bytes_per_session": null,
        "bytes_per_added_session": null }),
    ];
    let (mut opened, mut previous) = (0usize, base);
    for &target in counts {
        open_sessions(&url, target - opened, None).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = rss_bytes(doorman.pid())?;
        let per = (rss.saturating_sub(base)) / target as u64;
        // From the previous count on: what each further session costs, once what fills up
        // once (SQLite's page caches, up to 2 MiB per connection, the allocator's arenas) has.
        let added = (rss.saturating_sub(previous)) / (target - opened).max(1) as u64;
        eprintln!(
            "{target} idle sessions: RSS {:.1} MiB, {per} bytes per session, {added} per added session",
            rss as f64 / 1048576.0
        );
        out.push(
            json!({ "sessions": target, "rss_bytes": rss, "bytes_per_session": per,
            "bytes_per_added_session": added }),
        );
        (opened, previous) = (target, rss);
    }
    Ok(Value::Array(out))
}

/// Opens `n` idle 2025-11-25 sessions at `url` (`initialize`, 16 at a time), each checked to
/// have an `MCP-Session-Id`; `bearer`: the access token a signed-in client sends.
pub async fn open_sessions(url: &str, n: usize, bearer: Option<&str>) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(crate::load::CALL_TIMEOUT)
        .build()?;
    let authorization = bearer.map(|b| format!("Bearer {b}"));
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "bench", "version": "1" } } })
    .to_string();
    let workers = 16;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
        let authorization = authorization.clone();
        let share = n / workers + usize::from(w < n % workers);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let mut request = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json");
                if let Some(a) = &authorization {
                    request = request.header("authorization", a);
                }
                let r = request.body(body.clone()).send().await?;
                anyhow::ensure!(
                    r.headers().contains_key("mcp-session-id"),
                    "initialize gave no session: {}",
                    r.status()
                );
                r.bytes().await?;
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Median milliseconds from process start to `/healthz` answering, on a fresh data directory.
pub async fn measure_startup(bins: &Binaries, runs: usize) -> anyhow::Result<u64> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let d = start_doorman(bins, &[], SignIn::Local).await?;
        times.push(started.elapsed().as_millis() as u64);
        drop(d);
    }
    times.sort_unstable();
    Ok(times[times.len() / 2])
}
