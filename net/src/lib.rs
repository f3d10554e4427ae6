//! Mutual TLS for the fleet's gRPC (DESIGN §6, FLT-3).
//!
//! The controller serves TLS with client certificates *optional* at the
//! handshake, because `Enroll` is the one call made before an agent has a
//! certificate; every other call checks the caller's certificate fingerprint
//! against the catalog ([`PeerInfo::cert_sha256`]). A certificate from another
//! CA fails the handshake itself. Clients trust the controller either through
//! its CA certificate or, when enrolling, through the CA's pinned SHA-256.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {message}")]
    Pem { what: String, message: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid controller URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("cannot reach the controller at {url}: {message}")]
    Connect { url: String, message: String },
}

pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// Writes a certificate or key file atomically with `mode` (0600 for keys):
/// a temp file of its own (two writers never share one), fsync, rename, then
/// fsync of the directory so the rename itself survives a crash.
pub fn write_file(path: &std::path::Path, data: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand_suffix()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let written = f
        .write_all(data.as_bytes())
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// 64 random bits for temp names, from the OS.
fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        // A clock-and-pid fallback is unique enough for a temp name.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_le_bytes(b)
}

/// SHA-256 of a certificate's DER bytes, lowercase hex: how agents pin the CA
/// and how the controller names a client certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The first certificate of a PEM bundle, as DER.
pub fn cert_der(pem: &str, what: &str) -> Result<CertificateDer<'static>> {
    certs(pem, what)?.into_iter().next().ok_or(NetError::Pem {
        what: what.into(),
        message: "no certificate in PEM".into(),
    })
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| NetError::Pem {
            what: what.into(),
            message: e.to_string(),
        })
}

fn key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| NetError::Pem {
        what: what.into(),
        // The parser's message never carries key bytes, but keep it generic anyway.
        message: format!("not a PEM private key ({})", kind_of(&e)),
    })
}

fn kind_of(e: &rustls::pki_types::pem::Error) -> &'static str {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no key found",
        _ => "malformed",
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "CA certificate")? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// A certificate chain (leaf first, then the CA) and its private key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity { .. }")
    }
}

/// What the controller learns of a connection at the handshake.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    /// Fingerprint of the client certificate, when one was presented (it has
    /// already been verified against the CA).
    pub cert_sha256: Option<String>,
}

/// One accepted TLS connection, as tonic's server sees it.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Server TLS: our chain, clients verified against `ca_pem` when they present
/// a certificate.
pub fn server_config(ca_pem: &str, identity: &Identity) -> Result<Arc<rustls::ServerConfig>> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| NetError::Pem {
                what: "CA certificate".into(),
                message: e.to_string(),
            })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&identity.chain_pem, "server certificate")?,
            key(&identity.key_pem, "server key")?,
        )?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts TLS connections on `listener`. Handshakes run concurrently; a
/// failed one (no TLS, a certificate from another CA, an expired one) is
/// logged with the peer's address and dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let hs =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                        .await;
                let tls = match hs {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %addr, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(peer = %addr, "TLS handshake timed out");
                        return;
                    }
                };
                let cert_sha256 = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| fingerprint(c));
                let conn = TlsConn {
                    inner: tls,
                    info: PeerInfo {
                        addr: Some(addr),
                        cert_sha256,
                    },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// How a client decides to trust the controller.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The fleet's CA certificate (PEM).
    Ca(String),
    /// SHA-256 (hex) of the CA certificate, before the agent has it (enrollment).
    Pin(String),
}

/// Client TLS with an optional client certificate.
pub fn client_config(trust: &Trust, identity: Option<&Identity>) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match trust {
        Trust::Ca(pem) => builder.with_root_certificates(roots(pem)?),
        Trust::Pin(sha) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa {
                sha256: sha.trim().to_ascii_lowercase(),
            })),
    };
    let mut cfg = match identity {
        Some(id) => builder.with_client_auth_cert(
            certs(&id.chain_pem, "client certificate")?,
            key(&id.key_pem, "client key")?,
        )?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Accepts a server whose chain carries a CA certificate with the pinned
/// fingerprint and whose leaf that CA signed for the name dialed.
#[derive(Debug)]
struct PinnedCa {
    sha256: String,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.sha256)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the controller's CA does not match --ca-sha256 (wrong controller, or a man in the middle)"
                        .into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A lazily connecting gRPC channel to `url` (`https://HOST:PORT`) over our TLS.
pub fn channel(url: &str, tls: rustls::ClientConfig) -> Result<Channel> {
    let bad = |m: &str| NetError::Url {
        url: url.into(),
        message: m.into(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("expected https://HOST:PORT"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|_| bad("bad host name"))?;
    let connector = TlsConnector::from(Arc::new(tls));
    let plain = format!("http://{host}:{port}");
    let endpoint = Endpoint::from_shared(plain)
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let addr = format!("{}:{port}", host);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            let name = name.clone();
            let addr = addr.clone();
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                let _ = tcp.set_nodelay(true);
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        })),
    )
}
