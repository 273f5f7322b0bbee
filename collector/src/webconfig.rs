//! `--web.config.file`: TLS, client certificates and basic auth in the Prometheus
//! exporter-toolkit format (docs/web-configuration.md of prometheus/exporter-toolkit), so one
//! file serves node_exporter and this collector alike.
//!
//! The file is read once at start-up. Anything the collector cannot honour exactly (an unknown
//! key, an unreadable file, a bad certificate, a password that is not a bcrypt hash, an option
//! it does not implement) stops start-up with one line saying what and where: a security
//! setting that is silently ignored is worse than none.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, bail, ensure};
use rustls::{ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::Deserialize;

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// Accepted for compatibility; the collector serves HTTP/1.1 only (what Prometheus uses).
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The parsed, validated web configuration.
#[derive(Default)]
pub struct WebConfig {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// `None`: no authentication.
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth_users", &self.basic_auth.as_ref().map(|b| b.users.len()))
            .field("headers", &self.headers)
            .finish()
    }
}

/// Reads and validates the file; errors name the file and the offending setting.
pub fn load(path: &Path) -> anyhow::Result<WebConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir).with_context(|| format!("web config {}", path.display()))
}

/// Parses the YAML text; relative file names are taken relative to `dir` (the config file's
/// directory, as the exporter-toolkit does).
pub fn parse(text: &str, dir: &Path) -> anyhow::Result<WebConfig> {
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        // One line: serde_yaml_ng's messages carry the line and column already.
        serde_yaml_ng::from_str::<Option<FileConfig>>(text)
            .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace('\n', " ")))?
            .unwrap_or_default()
    };
    ensure!(file.rate_limit.is_none(), "rate_limit is not supported (use --web.max-requests)");
    let mut cfg = WebConfig::default();
    if let Some(tls) = file.tls_server_config {
        cfg.tls = Some(Arc::new(tls_config(tls, dir).context("tls_server_config")?));
    }
    if let Some(users) = file.basic_auth_users.filter(|u| !u.is_empty()) {
        cfg.basic_auth = Some(Arc::new(BasicAuth::new(users).context("basic_auth_users")?));
    }
    if let Some(headers) = file.http_server_config.and_then(|h| h.headers) {
        cfg.headers = check_headers(headers).context("http_server_config.headers")?;
    }
    Ok(cfg)
}

fn check_headers(headers: BTreeMap<String, String>) -> anyhow::Result<Vec<(String, String)>> {
    const ALLOWED: [&str; 5] = [
        "Content-Security-Policy",
        "X-Frame-Options",
        "X-Content-Type-Options",
        "X-XSS-Protection",
        "Strict-Transport-Security",
    ];
    let mut out = Vec::new();
    for (name, value) in headers {
        ensure!(ALLOWED.contains(&name.as_str()), "header {name:?} is not one of {}", ALLOWED.join(", "));
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "X-Frame-Options" => ensure!(
                value.eq_ignore_ascii_case("deny") || value.eq_ignore_ascii_case("sameorigin"),
                "X-Frame-Options must be deny or sameorigin, not {value:?}"
            ),
            "X-Content-Type-Options" => {
                ensure!(value.eq_ignore_ascii_case("nosniff"), "X-Content-Type-Options must be nosniff, not {value:?}")
            }
            _ => {}
        }
        ensure!(axum::http::HeaderValue::from_str(&value).is_ok(), "header {name}: invalid value {value:?}");
        out.push((name, value));
    }
    Ok(out)
}

/// A PEM value given inline (`cert`) or as a file (`cert_file`), never both.
fn pem_source(
    inline: Option<String>,
    file: Option<PathBuf>,
    what: &str,
    dir: &Path,
) -> anyhow::Result<Option<Vec<u8>>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("both {what} and {what}_file are set: use one"),
        (Some(s), None) => Ok(Some(s.into_bytes())),
        (None, Some(f)) => {
            let f = dir.join(f);
            Ok(Some(std::fs::read(&f).with_context(|| format!("{what}_file {}", f.display()))?))
        }
        (None, None) => Ok(None),
    }
}

fn certs(pem: &[u8], what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{what}: not PEM certificates"))?;
    ensure!(!certs.is_empty(), "{what}: no PEM certificate found");
    Ok(certs)
}

fn tls_version(name: &str) -> anyhow::Result<&'static rustls::SupportedProtocolVersion> {
    match name {
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS10" | "TLS11" => bail!("{name} is not supported (TLS 1.2 is the oldest version offered)"),
        other => bail!("unknown TLS version {other:?} (TLS12 or TLS13)"),
    }
}

fn tls_config(t: TlsFile, dir: &Path) -> anyhow::Result<ServerConfig> {
    ensure!(
        t.client_allowed_sans.as_ref().is_none_or(Vec::is_empty),
        "client_allowed_sans is not supported: issue client certificates from a dedicated CA instead"
    );
    let mut provider = rustls::crypto::ring::default_provider();
    restrict_provider(&mut provider, t.cipher_suites.as_deref(), t.curve_preferences.as_deref())?;
    let provider = Arc::new(provider);

    let cert_pem = pem_source(t.cert, t.cert_file, "cert", dir)?.context("cert_file (or cert) is required")?;
    let key_pem = pem_source(t.key, t.key_file, "key", dir)?.context("key_file (or key) is required")?;
    let chain = certs(&cert_pem, "cert_file")?;
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| anyhow::anyhow!("key_file: no PEM private key ({e})"))?;

    let min = tls_version(t.min_version.as_deref().unwrap_or("TLS12")).context("min_version")?;
    let max = tls_version(t.max_version.as_deref().unwrap_or("TLS13")).context("max_version")?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [&rustls::version::TLS12, &rustls::version::TLS13]
        .into_iter()
        .filter(|v| (u16::from(min.version)..=u16::from(max.version)).contains(&u16::from(v.version)))
        .collect();
    ensure!(!versions.is_empty(), "min_version is above max_version");

    let ca_pem = pem_source(t.client_ca, t.client_ca_file, "client_ca", dir)?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let builder = match (auth, ca_pem) {
        ("NoClientCert", None) => builder.with_no_client_auth(),
        ("NoClientCert", Some(_)) => {
            bail!("client_ca_file is set but client_auth_type is NoClientCert: use RequireAndVerifyClientCert")
        }
        (verify @ ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven"), Some(pem)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(&pem, "client_ca_file")? {
                roots.add(c).context("client_ca_file: unusable CA certificate")?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if verify == "VerifyClientCertIfGiven" {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(v.build().context("client certificate verifier")?)
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            bail!("client_auth_type {auth} needs client_ca_file (or client_ca)")
        }
        ("RequestClientCert" | "RequireAnyClientCert", _) => bail!(
            "client_auth_type {auth} accepts certificates nobody verified and is not supported: \
             use RequireAndVerifyClientCert with client_ca_file"
        ),
        (other, _) => bail!(
            "unknown client_auth_type {other:?} (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
        ),
    };
    let mut config = builder.with_single_cert(chain, key).context("cert_file/key_file")?;
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    // HTTP/1.1 only: a client that offers nothing else (an HTTP/2-only client) is refused in
    // the handshake instead of talking a protocol the server does not speak.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Applies `cipher_suites` (TLS 1.2 suites, by their IANA/Go names; TLS 1.3 suites are always
/// on, as in Go) and `curve_preferences` (Go names) to the provider.
fn restrict_provider(
    p: &mut CryptoProvider,
    suites: Option<&[String]>,
    curves: Option<&[String]>,
) -> anyhow::Result<()> {
    if let Some(names) = suites.filter(|s| !s.is_empty()) {
        let mut chosen: Vec<_> =
            p.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied().collect();
        for name in names {
            let s = p
                .cipher_suites
                .iter()
                .find(|s| s.version() == &rustls::version::TLS12 && format!("{:?}", s.suite()) == *name)
                .with_context(|| format!("cipher_suites: {name:?} is not a supported TLS 1.2 suite"))?;
            chosen.push(*s);
        }
        p.cipher_suites = chosen;
    }
    if let Some(names) = curves.filter(|c| !c.is_empty()) {
        let mut chosen = Vec::new();
        for name in names {
            let group = match name.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                "CurveP521" => rustls::NamedGroup::secp521r1,
                other => bail!("curve_preferences: unknown curve {other:?}"),
            };
            let g = p
                .kx_groups
                .iter()
                .find(|g| g.name() == group)
                .with_context(|| format!("curve_preferences: {name} is not supported"))?;
            chosen.push(*g);
        }
        p.kx_groups = chosen;
    }
    Ok(())
}

/// Checks `Authorization: Basic` credentials against bcrypt hashes. Results are cached per
/// (user, password) digest so a scrape every few seconds does not cost a bcrypt each; the
/// cache holds digests, never passwords, and is bounded.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// Compared against for unknown users, so a wrong user name costs as long as a wrong
    /// password (no user enumeration by timing).
    decoy: String,
    cache: Mutex<HashMap<[u8; 32], bool>>,
}

const AUTH_CACHE_MAX: usize = 1024;

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> anyhow::Result<Self> {
        let mut decoy = None;
        for (user, hash) in &users {
            let parts: bcrypt::HashParts =
                hash.parse().map_err(|e| anyhow::anyhow!("user {user:?}: password is not a bcrypt hash ({e})"))?;
            ensure!(!user.contains(':'), "user {user:?}: names cannot contain ':'");
            decoy.get_or_insert(parts.get_cost());
        }
        // A hash of a random password at the same cost as the users' ones.
        let cost = decoy.unwrap_or(bcrypt::DEFAULT_COST);
        let mut random = [0u8; 32];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut random)
            .map_err(|_| anyhow::anyhow!("no random numbers"))?;
        let decoy = bcrypt::hash(random, cost).context("making the decoy hash")?;
        Ok(Self { users: users.into_iter().collect(), decoy, cache: Mutex::new(HashMap::new()) })
    }

    /// Whether the `Authorization` header value grants access. May run a bcrypt comparison
    /// (tens of milliseconds): call it off the async workers.
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(decode_basic) else { return false };
        let digest = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(&(user.len() as u64).to_le_bytes());
            ctx.update(user.as_bytes());
            ctx.update(password.as_bytes());
            let mut d = [0u8; 32];
            d.copy_from_slice(ctx.finish().as_ref());
            d
        };
        if let Some(ok) = self.cache.lock().unwrap().get(&digest) {
            return *ok;
        }
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.as_str(), true),
            None => (self.decoy.as_str(), false),
        };
        let ok = known && bcrypt::verify(password.as_bytes(), hash).unwrap_or(false);
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= AUTH_CACHE_MAX {
            cache.clear();
        }
        cache.insert(digest, ok);
        ok
    }
}

/// `Basic base64(user:password)` → (user, password).
pub fn decode_basic(value: &[u8]) -> Option<(String, String)> {
    use base64::Engine as _;
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, password) = raw.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        format!("{:#}", parse(yaml, Path::new("/nonexistent")).unwrap_err())
    }

    #[test]
    fn empty_means_plain_http_without_auth() {
        let c = parse("", Path::new(".")).unwrap();
        assert!(c.tls.is_none() && c.basic_auth.is_none() && c.headers.is_empty());
        let c = parse("basic_auth_users: {}\n", Path::new(".")).unwrap();
        assert!(c.basic_auth.is_none());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        assert!(err("tls_server_config:\n  cert_fil: x\n").contains("unknown field `cert_fil`"));
        assert!(err("nope: 1\n").contains("unknown field `nope`"));
        assert!(err("basic_auth_users:\n  alice: plaintext\n").contains("not a bcrypt hash"));
        assert!(err("tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n").contains("a.pem"));
        assert!(err("tls_server_config:\n  key_file: a.key\n").contains("cert_file (or cert) is required"));
        assert!(err("rate_limit:\n  interval: 1s\n").contains("rate_limit is not supported"));
        assert!(err("http_server_config:\n  headers:\n    X-Frame-Options: allow\n").contains("deny or sameorigin"));
        assert!(err("http_server_config:\n  headers:\n    Server: x\n").contains("not one of"));
        assert!(err("[1, 2]").contains("invalid type"));
    }

    #[test]
    fn basic_auth_checks_and_caches() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = BasicAuth::new([("alice".to_owned(), hash)].into()).unwrap();
        use base64::Engine as _;
        let header = |u: &str, p: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
        };
        assert!(auth.check(Some(header("alice", "secret").as_bytes())));
        assert!(!auth.check(Some(header("alice", "wrong").as_bytes())));
        assert!(!auth.check(Some(header("bob", "secret").as_bytes())));
        assert!(!auth.check(None));
        assert!(!auth.check(Some(b"Bearer x")));
        assert_eq!(auth.cache.lock().unwrap().len(), 3);
        // Cached answers are the same answers.
        assert!(auth.check(Some(header("alice", "secret").as_bytes())));
        assert!(!auth.check(Some(header("alice", "wrong").as_bytes())));
    }
}
