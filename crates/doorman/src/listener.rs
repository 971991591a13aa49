//! Accepting connections: HTTP/1.1 and HTTP/2 on one listener (hyper), with limits so that a
//! slow or idle client cannot hold a connection open:
//! - `server.header_read_timeout`: a request's headers must all arrive within it, and a
//!   keep-alive connection waiting for its next request is closed after it too (hyper's HTTP/1
//!   header timer runs from the moment the connection is ready for a request);
//! - HTTP/2 connections are pinged every `header_read_timeout` and closed when a ping goes
//!   unanswered for as long;
//! - `server.body_read_timeout` bounds reading a request body (`gateway/endpoint.rs` answers
//!   `408` and closes the connection).
//!
//! Every request carries the peer address as axum's `ConnectInfo<SocketAddr>`, and is served
//! as its client's ([`ClientAddress::current`]: the peer, or whom a trusted proxy forwarded).

use std::{convert::Infallible, future::Future, time::Duration};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request},
    response::Response,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};

use crate::net::{ClientAddress, TrustedProxies};

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish.
/// `app` answers one request (`server::App::handle`).
pub async fn serve<A, F>(
    listener: tokio::net::TcpListener,
    app: A,
    header_read_timeout: Duration,
    trusted_proxies: TrustedProxies,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    A: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_read_timeout)
        .keep_alive_timeout(header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let trusted = trusted_proxies.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let client = ClientAddress::resolve(peer.ip(), req.headers(), &trusted);
            let app = app.clone();
            // Made and run inside the client's scope, so all of it sees `ClientAddress::current`.
            client.scope(async move { Ok::<_, Infallible>(app(req.map(Body::new)).await) })
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}
