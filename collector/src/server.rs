//! The HTTP endpoint: metrics, landing page, health and readiness; TLS, basic auth, timeouts and
//! the cap on concurrent scrapes (`--web.*` flags and `--web.config.file`).
use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower_http::{compression::CompressionLayer, set_header::SetResponseHeaderLayer, timeout::TimeoutLayer};

use crate::{
    metrics::Registry,
    webconfig::{BasicAuth, WebConfig},
};

/// The Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How the endpoint is served.
#[derive(Debug)]
pub struct Options {
    pub telemetry_path: String,
    pub web: WebConfig,
    /// Concurrent scrapes of the telemetry path; more get 503. 0: no limit.
    pub max_requests: usize,
    /// A client must send a request's complete header (and finish the TLS handshake) within
    /// this time, and an idle keep-alive connection is closed after it.
    pub header_read_timeout: Duration,
    /// A request must be answered within this time, or it gets 503.
    pub request_timeout: Duration,
}

impl Options {
    /// No TLS, no auth, node_exporter's default limits.
    pub fn plain(telemetry_path: &str) -> Self {
        Self {
            telemetry_path: telemetry_path.to_owned(),
            web: WebConfig::default(),
            max_requests: 40,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    gzip: Arc<Gzip>,
    telemetry_path: Arc<str>,
    /// `None`: no limit.
    scrapes: Option<Arc<Semaphore>>,
    max_requests: usize,
}

/// The router: `<telemetry path>`, `/`, `/-/healthy`, `/-/ready`; gzip when the client asks.
pub fn router(registry: Arc<Registry>, telemetry_path: &str) -> Router {
    app(registry, &Options::plain(telemetry_path))
}

/// The router with the options' limits, authentication and headers applied to every path.
pub fn app(registry: Arc<Registry>, opts: &Options) -> Router {
    let state = AppState {
        registry,
        gzip: Arc::new(Gzip::default()),
        telemetry_path: opts.telemetry_path.as_str().into(),
        scrapes: (opts.max_requests > 0).then(|| Arc::new(Semaphore::new(opts.max_requests))),
        max_requests: opts.max_requests,
    };
    let mut router = Router::new()
        .route(&opts.telemetry_path, get(metrics))
        .route("/", get(landing))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(|| async { "Ready\n" }))
        .with_state(state)
        // The other pages; the telemetry path compresses its own responses (`Gzip`), which
        // this layer leaves as they are (it never compresses a response twice).
        .layer(CompressionLayer::new().quality(tower_http::CompressionLevel::Precise(GZIP_LEVEL as i32)));
    if let Some(auth) = &opts.web.basic_auth {
        router = router.layer(middleware::from_fn_with_state(auth.clone(), basic_auth));
    }
    router = router.layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, opts.request_timeout));
    for (name, value) in &opts.web.headers {
        // Validated when the config was parsed.
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            router = router.layer(SetResponseHeaderLayer::overriding(n, v));
        }
    }
    router
}

async fn basic_auth(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    let value = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
    // A bcrypt comparison takes tens of milliseconds: not on the async workers.
    let a = auth.clone();
    let ok = tokio::task::spawn_blocking(move || a.check(value.as_deref())).await.unwrap_or(false);
    if ok {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic")], "Unauthorized\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let gzip = accepts_gzip(&headers).then(|| state.gzip.clone());
    // The permit moves into the blocking task: a scrape that timed out for its client still
    // counts until its collection work is done, so the cap bounds the work, not the waiting.
    let permit = match &state.scrapes {
        None => None,
        Some(s) => match s.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                tracing::debug!(max_requests = state.max_requests, "scrape refused: too many in flight");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("Limit of concurrent requests reached ({}), try again later.\n", state.max_requests),
                )
                    .into_response();
            }
        },
    };
    // Collectors do blocking reads (procfs, map syscalls): keep them off the async workers.
    let registry = state.registry.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let body = registry.encode()?;
        match gzip {
            Some(g) => anyhow::Ok((g.compress(&body)?, true)),
            None => Ok((body, false)),
        }
    })
    .await;
    match result {
        Ok(Ok((body, gzipped))) => {
            let mut r =
                ([(header::CONTENT_TYPE, CONTENT_TYPE), (header::VARY, "accept-encoding")], body).into_response();
            if gzipped {
                r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
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

/// gzip level of every response: at 100k series, 4x less CPU than the default (6) for a 17%
/// larger body (docs/performance.md).
const GZIP_LEVEL: u32 = 2;

/// The telemetry path's gzip encoders, kept between scrapes. tower-http's compression layer
/// makes a new deflate state (hundreds of KiB, zeroed) for every response; freed after each
/// scrape, they left the heap fragmented: 100 gzip scrapes grew the daemon's anonymous memory
/// by 2.4 MiB, 100 plain ones by 0.05 MiB (docs/performance.md). The layer cannot be given an
/// encoder, so the metrics handler compresses its body itself, with flate2 (the layer's own
/// backend) in gzip mode and `reset` between uses. Concurrent scrapes each take one; at most
/// `KEEP` are kept.
#[derive(Default)]
struct Gzip {
    idle: std::sync::Mutex<Vec<flate2::Compress>>,
}

impl Gzip {
    const KEEP: usize = 2;

    fn compress(&self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let taken = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut c = match taken {
            Some(mut c) => {
                c.reset();
                c
            }
            None => flate2::Compress::new_gzip(flate2::Compression::new(GZIP_LEVEL), 15),
        };
        let mut out = Vec::with_capacity(body.len() / 8 + 1024);
        loop {
            let consumed = usize::try_from(c.total_in())?;
            match c.compress_vec(&body[consumed..], &mut out, flate2::FlushCompress::Finish)? {
                flate2::Status::StreamEnd => break,
                // Out of room in `out` (compress_vec never grows it).
                _ => out.reserve(out.capacity().max(4096)),
            }
        }
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < Self::KEEP {
            idle.push(c);
        }
        Ok(out)
    }
}

/// Whether the client accepts gzip (RFC 9110, 12.5.3): a `gzip` or `x-gzip` coding in any
/// Accept-Encoding header, with no `q=0`. tower-http's negotiation, which decides for the other
/// pages, is not public; this follows it for the one coding the endpoint offers (it also does
/// not take `*` for gzip).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let gzip = coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip");
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok());
            gzip && q.is_some_and(|q| q > 0.0)
        },
    )
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

/// Serves `app` on `listener` (over TLS when the web config has it) until `shutdown`
/// completes; then stops accepting, lets requests in flight finish for up to a second, and
/// returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    opts: &Options,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tls = opts.web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(opts.header_read_timeout);
    let handshake_timeout = opts.header_read_timeout;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let http = http.clone();
        let watcher = graceful.watcher();
        match &tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    let _ = watcher.watch(conn).await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = http.serve_connection(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await.is_err() {
        tracing::debug!("connections still open at shutdown: closing them");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn accept(values: &[&str]) -> bool {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&h)
    }

    #[test]
    fn gzip_is_chosen_as_the_compression_layer_would() {
        assert!(accept(&["gzip"]));
        assert!(accept(&["GZip"]));
        assert!(accept(&["x-gzip"]));
        assert!(accept(&["br, gzip;q=0.5"]));
        assert!(accept(&["deflate", "gzip; Q=1"]));
        assert!(!accept(&[]));
        assert!(!accept(&["identity"]));
        assert!(!accept(&["br, deflate"]));
        assert!(!accept(&["gzip;q=0"]));
        assert!(!accept(&["gzip;q=0.000"]));
        assert!(!accept(&["gzip;q=x"]));
        assert!(!accept(&["*"]));
    }

    #[test]
    fn a_kept_encoder_compresses_each_body_whole() {
        let g = Gzip::default();
        let bodies: Vec<Vec<u8>> = vec![
            b"a 1\n".repeat(100_000),
            Vec::new(),
            (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect(),
            b"up 1\n".to_vec(),
        ];
        for body in bodies.iter().chain(bodies.iter()) {
            let gz = g.compress(body).unwrap();
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
            assert_eq!(&back, body);
        }
        assert_eq!(g.idle.lock().unwrap().len(), 1);
    }
}
