//! TLS for the PostgreSQL store, with rustls (already in the build through reqwest): the URL's
//! `sslmode` and `sslrootcert` as libpq reads them, a small `MakeTlsConnect` over tokio-rustls.
//!
//! - `disable`: plain TCP.
//! - `prefer` (libpq's default, and so ours): TLS when the server offers it, else plain; the
//!   certificate is not checked (as libpq without a root certificate).
//! - `require`: TLS or no connection; the certificate is not checked, unless `sslrootcert=` names
//!   roots, then as `verify-ca` (as libpq).
//! - `verify-ca`: TLS, the certificate chain checked against the roots.
//! - `verify-full`: and the certificate must name the host of the URL.
//!
//! The roots are `sslrootcert=FILE` (PEM), or the system's (`sslrootcert=system`, which asks for
//! `verify-full` as in libpq, or no `sslrootcert`): the bundle named by `SSL_CERT_FILE`, else the usual system bundle paths, else the
//! Mozilla roots built in (webpki-roots).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// How the connection is secured (`sslmode=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when offered, unchecked.
    Prefer,
    /// TLS, unchecked.
    Require,
    /// TLS, the chain checked.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

/// Where the roots come from (`sslrootcert=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Roots {
    /// The system's.
    System,
    /// A PEM file.
    File(PathBuf),
}

/// The TLS settings of a store URL, and the URL without them (tokio-postgres knows neither
/// `verify-*` nor `sslrootcert`).
#[derive(Debug)]
pub struct TlsSettings {
    /// The mode.
    pub mode: SslMode,
    /// The roots, when the mode checks certificates.
    pub roots: Roots,
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query: the settings and the URL left.
pub fn split_url(url: &str) -> Result<(TlsSettings, String), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = SslMode::Prefer;
    let mut roots = None;
    let mut kept = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "sslmode" => {
                mode = match v {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                        ));
                    }
                }
            }
            "sslrootcert" => {
                let v = percent_decode(v);
                roots = Some(if v == "system" {
                    Roots::System
                } else {
                    Roots::File(PathBuf::from(v))
                });
            }
            _ => kept.push(kv),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    // As libpq: `require` with a roots file checks the chain; the system's roots are for
    // `verify-full` only (libpq refuses a weaker mode with them; here they make it verify-full).
    match (&roots, mode) {
        (Some(Roots::File(_)), SslMode::Require) => mode = SslMode::VerifyCa,
        (Some(Roots::System), SslMode::Prefer | SslMode::Require | SslMode::VerifyCa) => {
            mode = SslMode::VerifyFull
        }
        _ => {}
    }
    Ok((
        TlsSettings {
            mode,
            roots: roots.unwrap_or(Roots::System),
        },
        rest,
    ))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16)
        {
            out.push(x);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TlsSettings {
    /// The mode tokio-postgres is told (it only asks for TLS or not; the checks are the connector's).
    pub fn pg_mode(&self) -> PgSslMode {
        match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        }
    }

    /// The connector for these settings.
    pub fn connector(&self) -> Result<RustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(Unchecked(provider.clone()))
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.root_store()?);
                let inner =
                    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| format!("TLS roots: {e}"))?;
                Arc::new(Checked {
                    inner,
                    host_name: self.mode == SslMode::VerifyFull,
                })
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(RustlsConnect(Arc::new(config)))
    }

    /// A connection error, with what was checked when the certificate was refused.
    pub fn explain(&self, message: String) -> String {
        let checked = matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull);
        if !checked || !message.contains("certificate") {
            return message;
        }
        let roots = match &self.roots {
            Roots::File(p) => format!("the roots in sslrootcert {}", p.display()),
            Roots::System => "the system's roots".to_string(),
        };
        let what = if self.mode == SslMode::VerifyFull {
            "sslmode=verify-full: the server's certificate must chain to"
        } else {
            "sslmode=verify-ca: the server's certificate must chain to"
        };
        format!("{message} ({what} {roots})")
    }

    fn root_store(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        let file = match &self.roots {
            Roots::File(p) => Some(p.clone()),
            Roots::System => system_bundle(),
        };
        match file {
            Some(path) => {
                let bytes = std::fs::read(&path)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
                    .filter_map(Result::ok)
                    .collect();
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!(
                        "sslrootcert {}: no PEM certificate in it",
                        path.display()
                    ));
                }
            }
            None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(store)
    }
}

/// The system's bundle of roots: `SSL_CERT_FILE`, else the first usual path that exists.
fn system_bundle() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        return Some(PathBuf::from(f));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Accepts any certificate (`prefer`, `require`), but still checks the handshake's signatures.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The chain checked against the roots; the host name too for `verify-full`.
#[derive(Debug)]
struct Checked {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    host_name: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.host_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Makes a TLS connection per host for tokio-postgres.
#[derive(Clone)]
pub struct RustlsConnect(Arc<rustls::ClientConfig>);

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnectHost;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnectHost, io::Error> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{domain}: {e}")))?;
        Ok(RustlsConnectHost {
            config: self.0.clone(),
            name,
        })
    }
}

/// A TLS connection to one host.
pub struct RustlsConnectHost {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

type Connecting<S> = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

impl<S> TlsConnect<S> for RustlsConnectHost
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Connecting<S>;

    fn connect(self, stream: S) -> Connecting<S> {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            connector
                .connect(self.name, stream)
                .await
                .map(|s| RustlsStream(Box::new(s)))
        })
    }
}

/// The TLS stream tokio-postgres reads and writes.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_as_libpq_reads_them_and_taken_out() {
        let (s, rest) = split_url("postgres://u:p@h/db").unwrap();
        assert_eq!(
            (s.mode, rest.as_str()),
            (SslMode::Prefer, "postgres://u:p@h/db")
        );
        let (s, rest) = split_url(
            "postgres://u:p@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.roots, Roots::File("/tmp/ca.pem".into()));
        assert_eq!(rest, "postgres://u:p@h/db?application_name=x");
        // `require` with roots given checks the chain, as libpq does.
        let (s, _) = split_url("postgres://h/db?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!(s.mode, SslMode::VerifyCa);
        let (s, _) = split_url("postgres://h/db?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!((s.mode, s.roots), (SslMode::VerifyFull, Roots::System));
        assert!(
            split_url("postgres://h/db?sslmode=sometimes")
                .unwrap_err()
                .contains("sslmode=sometimes")
        );
    }
}
