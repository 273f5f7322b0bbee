//! The HTTP endpoint: metrics, landing page, health and readiness.
use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use tower_http::compression::CompressionLayer;

use crate::metrics::Registry;

/// The Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    telemetry_path: Arc<str>,
}

/// The router: `<telemetry path>`, `/`, `/-/healthy`, `/-/ready`; gzip when the client asks.
pub fn router(registry: Arc<Registry>, telemetry_path: &str) -> Router {
    let state = AppState { registry, telemetry_path: telemetry_path.into() };
    Router::new()
        .route(telemetry_path, get(metrics))
        .route("/", get(landing))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(|| async { "Ready\n" }))
        .with_state(state)
        // gzip level 2: at 100k series, 4x less CPU than the default (6) for a 17% larger body
        // (docs/performance.md).
        .layer(CompressionLayer::new().quality(tower_http::CompressionLevel::Precise(2)))
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Collectors do blocking reads (procfs, map syscalls): keep them off the async workers.
    let registry = state.registry.clone();
    match tokio::task::spawn_blocking(move || registry.encode()).await {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = format!("{e:#}"), "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e:#}\n")).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics task failed\n").into_response()
        }
    }
}

async fn landing(State(state): State<AppState>) -> Html<String> {
    let path = &state.telemetry_path;
    let version = env!("CARGO_PKG_VERSION");
    Html(format!(
        "<!DOCTYPE html>\n<html><head><title>collector</title></head><body>\n\
         <h1>collector {version}</h1>\n\
         <p>eBPF-based host and HTTP latency collector for Prometheus.</p>\n\
         <ul><li><a href=\"{path}\">Metrics</a></li>\
         <li><a href=\"/-/healthy\">Health</a></li><li><a href=\"/-/ready\">Readiness</a></li></ul>\n\
         </body></html>\n"
    ))
}
