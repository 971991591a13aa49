//! A bare HTTP relay, the benchmark's reference point: what any HTTP-aware gateway pays on this
//! machine before it does any work of its own.
//!
//! Every request is passed to `--upstream` as it came (method, path, headers, streamed body) on a
//! pooled keep-alive connection, and the answer back the same way: hyper's server and hyper's
//! pooled client, as in Doorman, but no JSON, no authentication, no audit. The benchmark drives it
//! like the Doorman configurations, so its ratio to direct is the ceiling those can approach.

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use clap::Parser;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    port: u16,
    /// The upstream's `host:port` (plain HTTP).
    #[arg(long)]
    upstream: String,
}

#[derive(Clone)]
struct Relay {
    client: Client<HttpConnector, Body>,
    upstream: String,
}

async fn relay(State(r): State<Relay>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{}{path}", r.upstream).parse::<Uri>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    parts.uri = uri;
    match r.client.request(Request::from_parts(parts, body)).await {
        Ok(answer) => answer.map(Body::new),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let state = Relay {
        client: Client::builder(TokioExecutor::new()).build(http),
        upstream: args.upstream,
    };
    let app = Router::new().fallback(relay).with_state(state);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
