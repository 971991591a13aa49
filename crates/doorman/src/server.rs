//! `doorman serve`: builds the application and runs it until asked to stop.

use std::{io::IsTerminal, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Json, Router, middleware,
    routing::{get, post},
};
use serde_json::json;

use crate::{
    audit::Audit,
    clock::{Clock, OffsetClock, SharedClock, SystemClock},
    config::{Config, LogFormat},
    console::Console,
    crypto::KeyRing,
    edge::EdgePolicy,
    gateway::{Gateway, endpoint},
    net::HttpClient,
    policy::Policies,
    sign_in::{AuthServer, setup},
    store::{Heard, Invalidation, Store},
    vault::{Vault, connect::ConnectApp},
};

/// Sets up logging: human-readable by default, JSON lines on request; always to stderr
/// (see `log_batch`).
pub fn init_logging(config: &Config) {
    use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};
    let filter: Targets = config
        .server
        .log_level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.server.log_format {
        // Colours for a person at a terminal; elsewhere (a journal, a container's log) the
        // same text through the cheaper field formatter.
        LogFormat::Text if std::io::stderr().is_terminal() => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(true)
                    .with_writer(crate::log_batch::Stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .fmt_fields(crate::log_batch::PlainFields)
                    .with_writer(crate::log_batch::Stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(crate::log_batch::Stderr),
            )
            .try_init(),
    };
    let _ = result;
}

/// Doorman's HTTP application: the router, and the direct path every tool call takes. A
/// `POST /mcp` goes through the same checks as the router's `/mcp` layer ([`Mcp::admit`]: the
/// edge, then the bearer token) to the same handler, without axum's routing and middleware
/// plumbing around it (about 20,000 instructions of a call, counted with callgrind:
/// cloning and boxing each layer's service and future, and moving them).
#[derive(Clone)]
pub struct App {
    router: Router,
    mcp: Arc<Mcp>,
}

/// What `/mcp` needs before its handlers: the checks every request passes, and the gateway.
struct Mcp {
    gateway: Arc<Gateway>,
    auth: Option<Arc<AuthServer>>,
    edge: Arc<EdgePolicy>,
}

impl App {
    /// Answers one request.
    pub async fn handle(&self, req: axum::extract::Request) -> axum::response::Response {
        if req.method() == axum::http::Method::POST && req.uri().path() == "/mcp" {
            // Boxed once here: hyper keeps the request's future in its connection state and
            // moves it, and this one is large.
            return Box::pin(self.mcp.post(req)).await;
        }
        use tower_service::Service;
        self.router
            .clone()
            .call(req)
            .await
            .unwrap_or_else(|e| match e {})
    }
}

impl Mcp {
    /// The checks in front of every `/mcp` request, in order: the edge (`Host`, `Origin`), then
    /// the bearer token. The request comes back with the person in its extensions, or the
    /// refusal to send. The router's `/mcp` layer and the direct path of `POST` both call this.
    async fn admit(
        &self,
        req: axum::extract::Request,
    ) -> Result<axum::extract::Request, axum::response::Response> {
        if let Some(refused) = crate::edge::refusal(&self.edge, &req) {
            return Err(refused);
        }
        crate::sign_in::bearer::admit(self.auth.as_ref(), req).await
    }

    async fn post(&self, req: axum::extract::Request) -> axum::response::Response {
        let req = match self.admit(req).await {
            Ok(req) => req,
            Err(refused) => return refused,
        };
        let (mut parts, body) = req.into_parts();
        let person = parts
            .extensions
            .remove::<crate::sign_in::Person>()
            .map(axum::Extension);
        endpoint::post(
            axum::extract::State(self.gateway.clone()),
            person,
            parts.headers,
            body,
        )
        .await
    }
}

/// The router's layer in front of `/mcp` (its `GET` and `DELETE`, and `POST` for callers of the
/// router alone): [`Mcp::admit`].
async fn mcp_checks(
    axum::extract::State(mcp): axum::extract::State<Arc<Mcp>>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    match mcp.admit(req).await {
        Ok(req) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// The whole HTTP application. `auth` is the authorization server (accounts mode) or `None`
/// (local mode); `test_clock` enables the test-only clock hook.
pub fn app(
    config: &Config,
    gateway: Arc<Gateway>,
    auth: Option<Arc<AuthServer>>,
    test_clock: Option<OffsetClock>,
) -> App {
    let mcp_checked = Arc::new(Mcp {
        gateway: gateway.clone(),
        auth: auth.clone(),
        edge: Arc::new(EdgePolicy::from_config(config)),
    });
    // In `doorman serve`, `POST /mcp` does not come through this router: `App::handle` sends it
    // through the same checks (`Mcp::admit`) to the same handler directly.
    let mcp = Router::new()
        .route(
            "/mcp",
            get(endpoint::get)
                .post(endpoint::post)
                .delete(endpoint::delete),
        )
        .with_state(gateway.clone())
        .layer(middleware::from_fn_with_state(
            mcp_checked.clone(),
            mcp_checks,
        ));
    let metrics_gw = gateway.clone();
    // Read once at start (the config check made sure it is set).
    let metrics_token: Option<Arc<secrecy::SecretString>> = config
        .server
        .metrics_token_env
        .as_ref()
        .and_then(|env| std::env::var(env).ok())
        .map(|t| Arc::new(secrecy::SecretString::from(t)));
    let ready_gw = gateway.clone();
    let mut router = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        // Ready when the store answers (the key ring was loaded before serving began), within
        // READY_WITHIN: a load balancer's health check gets "not ready" and the reason before
        // its own timeout, not a hang while the pool waits for a connection.
        .route(
            "/readyz",
            get(move || {
                let gw = ready_gw.clone();
                async move {
                    let reason = match tokio::time::timeout(READY_WITHIN, gw.sessions.store().ping()).await {
                        Ok(Ok(())) => {
                            return (
                                axum::http::StatusCode::OK,
                                Json(json!({ "status": "ready", "store": "ok", "key_ring": "loaded" })),
                            );
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "not ready: the store refuses");
                            "the store refused the check query"
                        }
                        Err(_) => {
                            tracing::warn!("not ready: the store did not answer within 1s");
                            "the store did not answer within 1s"
                        }
                    };
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({ "status": "unavailable", "store": "unreachable", "reason": reason, "key_ring": "loaded" })),
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let gw = metrics_gw.clone();
                let token = metrics_token.clone();
                async move {
                    if let Some(token) = token
                        && !bearer_matches(&headers, &token)
                    {
                        let mut r = axum::response::IntoResponse::into_response(axum::http::StatusCode::UNAUTHORIZED);
                        r.headers_mut().insert(
                            axum::http::header::WWW_AUTHENTICATE,
                            axum::http::HeaderValue::from_static("Bearer realm=\"doorman-metrics\""),
                        );
                        return r;
                    }
                    let m = crate::metrics::get();
                    m.live_sessions.set(gw.sessions.live_count() as i64);
                    axum::response::IntoResponse::into_response((
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    ))
                }
            }),
        )
        .merge(mcp);
    if let Some(auth) = &auth {
        router = router.merge(auth.router());
        let console = Arc::new(Console {
            auth: auth.clone(),
            gateway: gateway.clone(),
        });
        router = router.merge(console.router());
        if let Some(vault) = gateway.router.vault() {
            let gw = Arc::downgrade(&gateway);
            let connect = Arc::new(ConnectApp {
                vault: vault.clone(),
                browser: auth.browser.clone(),
                on_complete: Box::new(move |session, elicitation| {
                    if let Some(gw) = gw.upgrade() {
                        gw.elicitation_completed_here(session, elicitation);
                    }
                }),
            });
            router = router.merge(connect.router());
        }
    } else {
        // Local mode: no people, no pages; `/` says where the endpoint is.
        let mcp_url = config.mcp_resource();
        router = router.route(
            "/",
            get(move || {
                let url = mcp_url.clone();
                async move {
                    crate::web::pages::message_with_command(
                        axum::http::StatusCode::OK,
                        "Doorman (local mode)",
                        "No sign-in: every client that reaches this address uses the upstreams as the operator configured them. Point your MCP client at:",
                        &url,
                    )
                }
            }),
        );
    }
    if let Some(clock) = test_clock {
        router = router.route(
            "/_test/clock",
            post(move |Json(body): Json<serde_json::Value>| {
                let clock = clock.clone();
                async move {
                    let secs = body["advance_seconds"].as_f64().unwrap_or(0.0).max(0.0);
                    clock.advance(Duration::from_secs_f64(secs));
                    Json(json!({ "now_ms": clock.now_ms() }))
                }
            }),
        );
    }
    App {
        router,
        mcp: mcp_checked,
    }
}

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time.
fn bearer_matches(headers: &axum::http::HeaderMap, token: &secrecy::SecretString) -> bool {
    use secrecy::ExposeSecret;
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| {
            crate::crypto::constant_time_eq(given.as_bytes(), token.expose_secret().as_bytes())
        })
}

/// Whether the test clock hook is on: `DOORMAN_TEST_CLOCK=1`, in a debug build only (a release
/// build refuses to start with it set, rather than ignore it silently).
fn test_clock_wanted(value: Option<&str>, debug_build: bool) -> anyhow::Result<bool> {
    match (value, debug_build) {
        (Some("1"), true) => Ok(true),
        (Some("1"), false) => anyhow::bail!(
            "DOORMAN_TEST_CLOCK=1 is for the test suite's debug builds; this is a release build: unset it"
        ),
        _ => Ok(false),
    }
}

/// Runs Doorman until SIGINT or SIGTERM.
/// How long `/readyz` waits for the store.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    // DOORMAN_TEST_CLOCK=1: end-to-end tests move time forward through POST /_test/clock. Never
    // in a release build: whoever could set the variable could move token expiry.
    let test_clock = test_clock_wanted(
        std::env::var("DOORMAN_TEST_CLOCK").ok().as_deref(),
        cfg!(debug_assertions),
    )?
    .then(|| {
        tracing::warn!(
            "DOORMAN_TEST_CLOCK=1: the test clock hook is enabled; never use this in production"
        );
        OffsetClock::default()
    });
    let clock: SharedClock = match &test_clock {
        Some(c) => Arc::new(c.clone()),
        None => Arc::new(SystemClock),
    };
    let store = Store::open(&config.database_url()).await?;
    tracing::info!(engine = store.engine(), "store ready");
    let (ring, ring_source, created) = KeyRing::load(&config.key_ring_path())?;
    if created {
        tracing::warn!(
            path = %config.key_ring_path().display(),
            "created a new key ring for secrets at rest; back it up, and give every node the same file"
        );
    }
    let ring = Arc::new(ring);
    // One pooled client for everything Doorman calls that the operator configured (upstreams,
    // SSO providers); building one loads the platform's root certificates.
    let http = HttpClient::new()?;
    let auth = AuthServer::new(
        &config,
        store.clone(),
        clock.clone(),
        ring.clone(),
        http.clone(),
    )
    .await?;
    if let Some(auth) = &auth {
        auth.spawn_maintenance(
            config.server.poll_interval.0,
            config.server.purge_interval.0,
        );
        if let Some(link) = setup::first_run_link(auth).await? {
            // Printed to stdout, not logged: the link is a one-time secret for the operator.
            let message =
                "Doorman has no accounts yet. Create the first administrator within one hour";
            if config.server.log_format == LogFormat::Json {
                println!("{}", json!({ "message": message, "setup_link": link }));
            } else {
                println!("\n{message}:\n\n    {link}\n");
            }
            tracing::info!("no accounts yet: printed a one-time setup link on standard output");
        }
    }
    // Layer 2 needs people: it runs with the authorization server (accounts mode).
    let vault = match &auth {
        Some(a) => {
            let v = Arc::new(Vault::new(
                &config,
                store.clone(),
                a.ring.clone(),
                clock.clone(),
                http.clone(),
            )?);
            v.spawn_maintenance(ring_source.clone(), config.server.poll_interval.0);
            Some(v)
        }
        None => None,
    };
    let mut gateway = Gateway::new(
        &config,
        store.clone(),
        clock.clone(),
        http,
        vault.clone(),
        auth.as_ref()
            .map(|_| Arc::new(Policies::new(&config, store.clone()))),
        ring,
    )?;
    gateway.router.web_apps = auth.as_ref().map(|a| crate::gateway::layer2::WebApps {
        auth: a.clone(),
        redirect_uris: config.sign_in.web_app_redirect_uris.clone(),
    });
    if let Some(a) = &auth {
        gateway.router.set_upstream_minter(Arc::new(
            crate::sign_in::tokens::UpstreamTokens::new(
                a.keys.clone(),
                clock.clone(),
                a.issuer.clone(),
            )
            .with_auth(a),
        ));
    }
    let gateway = Arc::new(gateway);
    gateway.spawn_list_watch();
    if store.spawn_listener(on_change(&gateway, auth.as_ref())) {
        tracing::info!("listening for changes announced by other nodes (PostgreSQL LISTEN)");
    }
    Audit::start(
        store.clone(),
        clock,
        crate::audit::Settings {
            retention: config.audit.retention.0,
            purge_every: config.server.purge_interval.0,
            durable: config.audit.durable.then_some(config.audit.durable_wait.0),
        },
    );
    store.spawn_wal_checkpoints(crate::store::WAL_CHECK_EVERY, crate::store::WAL_LIMIT);
    let idle = config.server.session_idle_timeout.0;
    gateway.spawn_sweeper((idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(60)));
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let public = config.public_url();
    let mcp_url = public
        .join("mcp")
        .context("public_url cannot be joined with mcp")?;
    tracing::info!(
        listen = %listener.local_addr()?,
        mcp = %mcp_url,
        mode = ?config.sign_in.mode,
        upstreams = config.upstreams.len(),
        "Doorman is serving"
    );
    let app = app(&config, gateway, auth, test_clock);
    crate::listener::serve(
        listener,
        move |req| {
            let app = app.clone();
            async move { app.handle(req).await }
        },
        config.server.header_read_timeout.0,
        crate::net::TrustedProxies::new(
            config.server.trusted_proxy_nets(),
            config.server.forwarded_header,
        ),
        shutdown_signal(),
    )
    .await?;
    // Answered requests' records are stored before the store closes.
    let unstored = Audit::flush(Duration::from_secs(10)).await;
    if unstored > 0 {
        tracing::error!(records = unstored, "stopping with audit records not stored");
    }
    store.close().await;
    tracing::info!("Doorman stopped");
    Ok(())
}

/// What this node does with a change another node (or an operator's command) announced: the
/// same as the node that made it did to its own memory. Revocations and person facts apply at
/// once; after the listener (re)subscribes, revocations are re-read, as the poll would.
fn on_change(
    gateway: &Arc<Gateway>,
    auth: Option<&Arc<AuthServer>>,
) -> Arc<dyn Fn(Heard) + Send + Sync> {
    let gw = Arc::downgrade(gateway);
    let auth = auth.map(Arc::downgrade);
    Arc::new(move |heard| {
        let Some(gw) = gw.upgrade() else { return };
        let auth = auth.as_ref().and_then(std::sync::Weak::upgrade);
        let change = match heard {
            Heard::Subscribed => {
                if let Some(auth) = auth {
                    tokio::spawn(async move {
                        let now = auth.clock.now_ms();
                        let horizon = auth.tokens.lifetime_ms();
                        if let Err(e) = auth.tokens.revocations.poll(now, horizon).await {
                            tracing::warn!(error = %e, "cannot read revocations");
                        }
                    });
                }
                return;
            }
            Heard::Change(c) => c,
        };
        tracing::debug!(kind = change.kind(), "heard a change from another node");
        crate::metrics::get()
            .invalidations
            .get_or_create(&crate::metrics::KindLabels {
                kind: change.kind().into(),
            })
            .inc();
        match change {
            Invalidation::Grant(id) => {
                if let Some(a) = &auth {
                    a.tokens
                        .revocations
                        .revoke_grant_locally(&id, a.clock.now_ms());
                }
            }
            Invalidation::AccessToken(jti) => {
                if let Some(a) = &auth {
                    a.tokens
                        .revocations
                        .revoke_token_locally(&jti, a.clock.now_ms());
                }
            }
            Invalidation::Person(id) => {
                if let Some(p) = gw.policies() {
                    p.forget(&id);
                }
                if let Some(v) = gw.router.vault() {
                    v.forget(&id);
                }
                gw.lists_changed(&id);
            }
            Invalidation::Connections(user) => {
                if let Some(v) = gw.router.vault() {
                    v.forget(&user);
                }
                gw.lists_changed(&user);
            }
            Invalidation::ElicitationComplete {
                origin,
                session,
                elicitation,
            } => {
                if origin != gw.node {
                    gw.elicitation_complete(&session, &elicitation);
                }
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_test_clock_exists_only_in_debug_builds() {
        assert!(super::test_clock_wanted(Some("1"), true).unwrap());
        let e = super::test_clock_wanted(Some("1"), false).unwrap_err();
        assert!(e.to_string().contains("release build"), "{e}");
        for (value, debug) in [
            (None, true),
            (None, false),
            (Some("0"), true),
            (Some("yes"), false),
        ] {
            assert!(
                !super::test_clock_wanted(value, debug).unwrap(),
                "{value:?} {debug}"
            );
        }
    }
}
