//! `doorman serve`: builds the application and runs it until asked to stop.

use std::{io::IsTerminal, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Json, Router, middleware, routing::get};
use serde_json::json;

use crate::{
    clock::{SharedClock, SystemClock},
    config::{Config, LogFormat},
    edge::{EdgePolicy, check_host_and_origin},
    gateway::{Gateway, endpoint},
    store::Store,
};

/// Sets up logging: human-readable by default, JSON lines on request; always to stderr.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};
    let filter: Targets = config
        .server
        .log_level
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.server.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    let _ = result;
}

/// The whole HTTP application.
pub fn app(config: &Config, gateway: Arc<Gateway>) -> Router {
    let edge = Arc::new(EdgePolicy::from_config(config));
    let mcp = Router::new()
        .route(
            "/mcp",
            get(endpoint::get)
                .post(endpoint::post)
                .delete(endpoint::delete),
        )
        .with_state(gateway)
        .layer(middleware::from_fn_with_state(edge, check_host_and_origin));
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .merge(mcp)
}

/// Runs Doorman until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let store = Store::open(&config.database_url()).await?;
    tracing::info!(engine = store.engine(), "store ready");
    let gateway = Arc::new(Gateway::new(&config, store.clone(), clock)?);
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
    axum::serve(listener, app(&config, gateway))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    store.close().await;
    tracing::info!("Doorman stopped");
    Ok(())
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
