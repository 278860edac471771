//! TLS for the connections the engine opens itself: PostgreSQL with libpq's meaning of
//! `sslmode`, `sslrootcert`, `sslcert` and `sslkey`, and Redis `rediss://` URLs — both on
//! rustls with ring. A certificate problem is permanent: [`problem`] finds it in an error's
//! chain and says it in words an operator can act on.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The one crypto provider (ring), also installed as the process default for libraries that
/// build their own rustls configuration (redis).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let p = Arc::new(rustls::crypto::ring::default_provider());
            let _ = CryptoProvider::install_default((*p).clone());
            p
        })
        .clone()
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "invalid sslmode '{other}' (one of disable, allow, prefer, require, verify-ca, verify-full)"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS parameters of a PostgreSQL connection string, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgSsl {
    pub mode: Option<SslMode>,
    pub rootcert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// Keys this module handles; tokio-postgres never sees them.
const PG_SSL_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Takes the TLS parameters out of a libpq connection string (a `postgres://` URL or
/// `key=value` pairs) and gives back the rest, for tokio-postgres to parse.
pub fn split_pg(raw: &str) -> Result<(String, PgSsl), String> {
    let mut ssl = PgSsl::default();
    let mut take = |key: &str, value: String| -> Result<(), String> {
        match key {
            "sslmode" => ssl.mode = Some(SslMode::parse(&value)?),
            "sslrootcert" => ssl.rootcert = Some(value),
            "sslcert" => ssl.cert = Some(value),
            "sslkey" => ssl.key = Some(value),
            _ => unreachable!("only the keys of PG_SSL_KEYS"),
        }
        Ok(())
    };
    let trimmed = raw.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let Some((base, query)) = trimmed.split_once('?') else {
            return Ok((trimmed.to_string(), ssl));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if PG_SSL_KEYS.contains(&k) {
                take(k, percent_decode(v))?;
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, ssl));
    }
    let mut kept = Vec::new();
    for (k, v) in keyword_pairs(trimmed)? {
        if PG_SSL_KEYS.contains(&k.as_str()) {
            take(&k, v)?;
        } else {
            kept.push(format!(
                "{k}='{}'",
                v.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), ssl))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key = value` pairs of a libpq keyword string; values may be single-quoted with
/// backslash escapes.
fn keyword_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("missing \"=\" after \"{key}\""));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("unterminated quoted value of \"{key}\"")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// Where the server's certificate is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// Not checked (encryption without authentication, libpq's `require` without a CA).
    Unverified,
    /// The CAs of a PEM file.
    File(PathBuf),
    /// The operating system's trusted roots (`sslrootcert=system`).
    System,
}

/// What a connection does about TLS, decided from the parameters as libpq decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgTlsPlan {
    pub mode: SslMode,
    pub roots: Roots,
    /// Whether the certificate must name the host (verify-full).
    pub check_name: bool,
    pub client: Option<(PathBuf, PathBuf)>,
}

fn home_file(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = Path::new(&home).join(".postgresql").join(name);
    p.exists().then_some(p)
}

/// The inventory's `[postgres]` TLS defaults for this process (see [`set_pg_defaults`]).
static PG_DEFAULTS: std::sync::Mutex<Option<PgSsl>> = std::sync::Mutex::new(None);

/// Sets the TLS parameters a PostgreSQL URL without its own takes (the inventory's
/// `[postgres]` sslmode, sslrootcert, sslcert, sslkey).
pub fn set_pg_defaults(defaults: PgSsl) {
    *PG_DEFAULTS.lock().unwrap() = Some(defaults);
}

impl PgSsl {
    /// Fills what the string leaves out: from the inventory's `[postgres]` defaults, then
    /// from libpq's environment variables (PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY).
    pub fn with_defaults(mut self) -> Result<PgSsl, String> {
        if let Some(d) = PG_DEFAULTS.lock().unwrap().clone() {
            self.mode = self.mode.or(d.mode);
            self.rootcert = self.rootcert.or(d.rootcert);
            if self.cert.is_none() && self.key.is_none() {
                self.cert = d.cert;
                self.key = d.key;
            }
        }
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        if self.mode.is_none() {
            if let Some(m) = var("PGSSLMODE") {
                self.mode = Some(SslMode::parse(&m).map_err(|e| format!("PGSSLMODE: {e}"))?);
            }
        }
        self.rootcert = self.rootcert.or_else(|| var("PGSSLROOTCERT"));
        self.cert = self.cert.or_else(|| var("PGSSLCERT"));
        self.key = self.key.or_else(|| var("PGSSLKEY"));
        Ok(self)
    }

    /// The parameters as libpq keywords (` sslmode='…' sslrootcert='…'`), for connection
    /// strings handed to libpq itself: primary_conninfo, pg_basebackup, pg_rewind.
    pub fn conninfo(&self) -> String {
        let mut s = String::new();
        let mut add = |k: &str, v: &str| {
            s.push_str(&format!(
                " {k}='{}'",
                v.replace('\\', "\\\\").replace('\'', "\\'")
            ))
        };
        if let Some(m) = self.mode {
            add("sslmode", m.as_str());
        }
        for (k, v) in [
            ("sslrootcert", &self.rootcert),
            ("sslcert", &self.cert),
            ("sslkey", &self.key),
        ] {
            if let Some(v) = v {
                add(k, v);
            }
        }
        s
    }

    /// libpq's rules: the default mode is `prefer` (`verify-full` with `sslrootcert=system`);
    /// a CA file (given, or ~/.postgresql/root.crt) makes every encrypting mode check the
    /// chain, so `require` with a CA behaves as `verify-ca`; `verify-ca` and `verify-full`
    /// need a CA; `sslrootcert=system` needs `verify-full`; a client certificate is
    /// `sslcert` + `sslkey` (default ~/.postgresql/postgresql.crt and .key).
    pub fn plan(&self) -> Result<PgTlsPlan, String> {
        let system = self.rootcert.as_deref() == Some("system");
        let mode = self.mode.unwrap_or(if system {
            SslMode::VerifyFull
        } else {
            SslMode::Prefer
        });
        if system && mode != SslMode::VerifyFull && mode != SslMode::Disable {
            return Err(format!(
                "sslmode={} may not be used with sslrootcert=system (use sslmode=verify-full)",
                mode.as_str()
            ));
        }
        let roots = match self.rootcert.as_deref() {
            Some("system") => Roots::System,
            Some(path) => Roots::File(PathBuf::from(path)),
            None => match home_file("root.crt") {
                Some(p) => Roots::File(p),
                None => Roots::Unverified,
            },
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots == Roots::Unverified {
            return Err(format!(
                "sslmode={} needs the CA that signed the server's certificate: give \
                 sslrootcert=/path/to/ca.pem (or sslrootcert=system for the system's trusted roots)",
                mode.as_str()
            ));
        }
        let client = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (Some(_), None) => return Err("sslcert is given without sslkey".into()),
            (None, Some(_)) => return Err("sslkey is given without sslcert".into()),
            (None, None) => match (home_file("postgresql.crt"), home_file("postgresql.key")) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            },
        };
        Ok(PgTlsPlan {
            mode,
            roots,
            check_name: mode == SslMode::VerifyFull,
            client,
        })
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| format!("{what} {}: not a PEM private key: {e}", path.display()))
}

/// The trusted roots of a plan.
fn root_store(roots: &Roots, what: &str) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::Unverified => {}
        Roots::File(path) => {
            for cert in read_certs(path, what)? {
                store
                    .add(cert)
                    .map_err(|e| format!("{what} {}: {e}", path.display()))?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = store.add(cert);
            }
            if store.is_empty() {
                return Err(
                    "sslrootcert=system: the system has no trusted root certificates".into(),
                );
            }
        }
    }
    Ok(store)
}

/// A rustls client configuration: trust as `roots` says (the chain only, or the chain and
/// the name), a client certificate when given.
pub fn client_config(
    roots: &Roots,
    check_name: bool,
    client: Option<&(PathBuf, PathBuf)>,
    ca_param: &str,
) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let webpki = match roots {
        Roots::Unverified => None,
        _ => {
            let store = root_store(roots, ca_param)?;
            let v = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| format!("{ca_param}: {e}"))?;
            Some(v)
        }
    };
    let verifier: Arc<dyn ServerCertVerifier> = match webpki {
        Some(v) if check_name => v,
        chain => Arc::new(Lenient { chain, provider }),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                read_certs(cert, "client certificate")?,
                read_key(key, "client key")?,
            )
            .map_err(|e| format!("client certificate {}: {e}", cert.display())),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// libpq's checks short of verify-full: the chain and validity period but not the name
/// (verify-ca; require or prefer with a CA), or nothing at all (require or prefer without a CA:
/// encryption without authentication). The handshake's signatures are checked either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // webpki checks the chain (and its validity period) first, the name last: a name
        // error means everything else held.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How to open connections with a connection string's TLS parameters.
#[derive(Clone)]
pub struct PgTls {
    mode: SslMode,
    connector: Option<PgConnector>,
}

impl PgTls {
    /// From the TLS parameters of a connection string (and libpq's environment variables).
    pub fn new(ssl: PgSsl) -> Result<PgTls, String> {
        let plan = ssl.with_defaults()?.plan()?;
        let connector = if plan.mode == SslMode::Disable {
            None
        } else {
            Some(PgConnector::new(client_config(
                &plan.roots,
                plan.check_name,
                plan.client.as_ref(),
                "sslrootcert",
            )?))
        };
        Ok(PgTls {
            mode: plan.mode,
            connector,
        })
    }

    /// Connects as `sslmode` says: `allow` tries without TLS first and with it when the server
    /// refuses a plain connection; `prefer` the other way round (tokio-postgres falls back when
    /// the server does not offer TLS). The connection's task runs until the client is dropped.
    pub async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        use tokio_postgres::config::SslMode as Wire;
        let attempt = |wire: Wire| {
            let mut config = config.clone();
            config.ssl_mode(wire);
            let connector = self.connector.clone();
            async move {
                match connector {
                    Some(tls) => {
                        let (client, conn) = config.connect(tls).await?;
                        tokio::spawn(conn);
                        Ok(client)
                    }
                    None => {
                        let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                        tokio::spawn(conn);
                        Ok(client)
                    }
                }
            }
        };
        match self.mode {
            SslMode::Disable => attempt(Wire::Disable).await,
            SslMode::Prefer => attempt(Wire::Prefer).await,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                attempt(Wire::Require).await
            }
            SslMode::Allow => match attempt(Wire::Disable).await {
                Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "28000") => {
                    attempt(Wire::Require).await
                }
                other => other,
            },
        }
    }
}

/// tokio-postgres' TLS hook, on rustls.
#[derive(Clone)]
pub struct PgConnector(Arc<rustls::ClientConfig>);

impl PgConnector {
    pub fn new(config: rustls::ClientConfig) -> Self {
        PgConnector(Arc::new(config))
    }
}

pub struct PgConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> tokio_postgres::tls::MakeTlsConnect<S> for PgConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgStream<S>;
    type TlsConnect = PgConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgConnect, Self::Error> {
        Ok(PgConnect {
            config: self.0.clone(),
            name: ServerName::try_from(domain.to_string())?,
        })
    }
}

impl<S> tokio_postgres::tls::TlsConnect<S> for PgConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PgStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(PgStream(tls))
        })
    }
}

pub struct PgStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PgStream<S> {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        tokio_postgres::tls::ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PgStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PgStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A TLS problem somewhere in an error's chain, in words: what is wrong with the server's
/// certificate, or that the handshake failed and why. `None` when the error is not about TLS.
pub fn problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(r));
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                return Some(describe(r));
            }
        }
        next = e.source();
    }
    None
}

fn describe(e: &rustls::Error) -> String {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "TLS: the server's certificate is not signed by a trusted CA \
                 (unknown issuer: check the CA file given as sslrootcert / cacert)"
                .into(),
            C::NotValidForName => "TLS: the server's certificate does not name this host".into(),
            C::NotValidForNameContext {
                expected,
                presented,
            } => format!(
                "TLS: the server's certificate does not name this host: it is for {}, not {} \
                 (connect by a name it holds, or check the CA only with sslmode=verify-ca)",
                presented
                    .iter()
                    .map(|p| p
                        .split_once('"')
                        .and_then(|(_, r)| r.rsplit_once('"'))
                        .map(|(n, _)| n.to_string())
                        .unwrap_or_else(|| p.clone()))
                    .collect::<Vec<_>>()
                    .join(", "),
                expected.to_str()
            ),
            C::Expired => "TLS: the server's certificate has expired".into(),
            C::ExpiredContext { time, not_after } => format!(
                "TLS: the server's certificate has expired (valid until {}, now {})",
                utc(not_after.as_secs()),
                utc(time.as_secs())
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "TLS: the server's certificate is not valid yet".into()
            }
            C::Revoked => "TLS: the server's certificate is revoked".into(),
            C::BadSignature => "TLS: the server's certificate has a bad signature".into(),
            other => format!("TLS: the server's certificate is not acceptable: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => format!(
            "TLS: the server ended the handshake ({alert:?}); if it asks for a client \
             certificate, give one the server's CA signed (sslcert/sslkey, or cert/key)"
        ),
        other => format!("TLS: {other}"),
    }
}

/// The same, read from an error's text, for libraries that keep the TLS error only as text
/// (redis wraps it where `downcast` cannot reach it).
pub fn problem_in_text(text: &str) -> Option<String> {
    if let Some((_, rest)) = text.split_once("invalid peer certificate: ") {
        let rest = rest.trim();
        return Some(if rest.starts_with("UnknownIssuer") {
            describe(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        } else if rest.contains("not valid for name") || rest.starts_with("NotValidForName") {
            format!("TLS: the server's certificate does not name this host ({rest})")
        } else if rest.contains("expired") || rest.starts_with("Expired") {
            format!("TLS: the server's certificate has expired ({rest})")
        } else {
            format!("TLS: the server's certificate is not acceptable: {rest}")
        });
    }
    if let Some((_, alert)) = text.split_once("received fatal alert: ") {
        return Some(format!(
            "TLS: the server ended the handshake ({}); if it asks for a client certificate, \
             give one the server's CA signed (sslcert/sslkey, or cert/key)",
            alert.trim()
        ));
    }
    None
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// Whether an error's text says the host name does not exist (a permanent DNS answer, unlike
/// "temporary failure in name resolution").
pub fn name_not_found(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("name or service not known")
        || t.contains("no address associated with hostname")
        || t.contains("nodename nor servname provided")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssl(mode: Option<&str>, root: Option<&str>) -> PgSsl {
        PgSsl {
            mode: mode.map(|m| SslMode::parse(m).unwrap()),
            rootcert: root.map(str::to_string),
            ..PgSsl::default()
        }
    }

    #[test]
    fn ssl_parameters_leave_the_url_and_keep_the_rest() {
        let cases: &[(&str, &str, PgSsl)] = &[
            (
                "postgres://u:p@h:5432/db",
                "postgres://u:p@h:5432/db",
                PgSsl::default(),
            ),
            (
                "postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
                "postgres://u:p@h/db?application_name=x",
                ssl(Some("verify-full"), Some("/etc/ca.pem")),
            ),
            (
                "postgresql://h/db?sslmode=require",
                "postgresql://h/db",
                ssl(Some("require"), None),
            ),
            (
                "host=h port=5432 sslmode=verify-ca sslrootcert='/a b/ca.pem' password='it\\'s'",
                "host='h' port='5432' password='it\\'s'",
                ssl(Some("verify-ca"), Some("/a b/ca.pem")),
            ),
        ];
        for (raw, rest, want) in cases {
            let (got_rest, got) = split_pg(raw).unwrap();
            assert_eq!(&got_rest, rest, "{raw}");
            assert_eq!(&got, want, "{raw}");
        }
        assert!(split_pg("postgres://h/db?sslmode=verify_full")
            .unwrap_err()
            .contains("invalid sslmode 'verify_full'"));
        assert!(split_pg("host=h sslmode").unwrap_err().contains("missing"));
    }

    #[test]
    fn the_plan_follows_libpq() {
        let file = Roots::File("/ca.pem".into());
        // (sslmode, sslrootcert) → (mode, roots, check_name) or an error's words
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Result<(SslMode, Roots, bool), &'a str>,
        );
        let cases: &[Case] = &[
            (None, None, Ok((SslMode::Prefer, Roots::Unverified, false))),
            (
                Some("disable"),
                None,
                Ok((SslMode::Disable, Roots::Unverified, false)),
            ),
            (
                Some("require"),
                None,
                Ok((SslMode::Require, Roots::Unverified, false)),
            ),
            // a CA makes require check the chain, as verify-ca does
            (
                Some("require"),
                Some("/ca.pem"),
                Ok((SslMode::Require, file.clone(), false)),
            ),
            (
                Some("verify-ca"),
                Some("/ca.pem"),
                Ok((SslMode::VerifyCa, file.clone(), false)),
            ),
            (
                Some("verify-full"),
                Some("/ca.pem"),
                Ok((SslMode::VerifyFull, file.clone(), true)),
            ),
            (
                None,
                Some("system"),
                Ok((SslMode::VerifyFull, Roots::System, true)),
            ),
            (
                Some("verify-full"),
                Some("system"),
                Ok((SslMode::VerifyFull, Roots::System, true)),
            ),
            (
                Some("require"),
                Some("system"),
                Err("may not be used with sslrootcert=system"),
            ),
            (
                Some("verify-ca"),
                None,
                Err("sslmode=verify-ca needs the CA"),
            ),
            (
                Some("verify-full"),
                None,
                Err("sslmode=verify-full needs the CA"),
            ),
        ];
        for (mode, root, want) in cases {
            let got = ssl(*mode, *root).plan();
            match (want, got) {
                (Ok((m, r, n)), Ok(plan)) => {
                    assert_eq!(
                        (&plan.mode, &plan.roots, plan.check_name),
                        (m, r, *n),
                        "{mode:?} {root:?}"
                    )
                }
                (Err(words), Err(e)) => assert!(e.contains(words), "{mode:?} {root:?}: {e}"),
                (want, got) => panic!("{mode:?} {root:?}: want {want:?}, got {got:?}"),
            }
        }
        let half = PgSsl {
            cert: Some("/c.pem".into()),
            ..PgSsl::default()
        };
        assert!(half.plan().unwrap_err().contains("without sslkey"));
    }

    #[test]
    fn dns_answers_that_are_final_are_told_apart_from_temporary_ones() {
        assert!(name_not_found(
            "failed to lookup address information: Name or service not known"
        ));
        assert!(!name_not_found(
            "failed to lookup address information: Temporary failure in name resolution"
        ));
        assert!(!name_not_found("Connection refused (os error 111)"));
    }
}
