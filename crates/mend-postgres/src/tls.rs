//! TLS to PostgreSQL with rustls: the libpq URL parameters `sslmode` and `sslrootcert`, read
//! off the URL before the driver sees it, and the connector every connection of the store
//! uses (pools, the session connection, one-off connections). It owns no sockets and never
//! sees a password.
//!
//! The modes mean what they mean to libpq: `disable` never uses TLS; `prefer` (the default)
//! uses TLS when the server offers it and plain TCP when it does not, verifying nothing;
//! `require` insists on TLS but does not verify the certificate — unless `sslrootcert` is given,
//! then it checks the chain as `verify-ca` does (libpq's rule); `verify-ca` checks that the
//! server's certificate chains to a root in `sslrootcert`; `verify-full` also checks that it
//! names the host of the URL.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// How a connection uses TLS (the URL's `sslmode`, as libpq spells it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, plain otherwise; nothing is verified.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not verified (unless `sslrootcert` is given).
    Require,
    /// TLS, and the server's certificate must chain to a root in `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host the URL connects to.
    VerifyFull,
}

impl SslMode {
    /// The parameter's value as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            "allow" => Err(
                "sslmode=allow is not supported: use sslmode=prefer (TLS when the server offers it) or sslmode=disable"
                    .into(),
            ),
            other => Err(format!(
                "sslmode={other:?} is not a TLS mode: use disable, prefer, require, verify-ca or verify-full"
            )),
        }
    }
}

/// Where the trusted roots come from (the URL's `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the public web roots (Mozilla's list, compiled in).
    System,
}

/// The TLS settings of a database URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    /// `sslmode`; `prefer` when absent.
    pub mode: SslMode,
    /// `sslrootcert`, when given.
    pub root_cert: Option<RootCert>,
}

/// Splits `sslmode` and `sslrootcert` off a URL (the driver knows neither `verify-ca`,
/// `verify-full` nor `sslrootcert`); the rest of the URL is returned unchanged.
pub fn split_tls(url: &str) -> Result<(String, TlsOptions), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), TlsOptions::default()));
    };
    let mut opts = TlsOptions::default();
    let mut rest = Vec::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        match p.split_once('=') {
            Some(("sslmode", v)) => opts.mode = percent_decode(v).parse()?,
            Some(("sslrootcert", v)) => {
                let v = percent_decode(v);
                opts.root_cert = match v.as_str() {
                    "" => {
                        return Err("sslrootcert is empty: give the path of a PEM file of the CA certificate(s), or sslrootcert=system".into())
                    }
                    "system" => Some(RootCert::System),
                    path => Some(RootCert::File(PathBuf::from(path))),
                };
            }
            Some((k @ ("sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir"), _)) => {
                return Err(format!(
                    "{k} is not supported: mend presents no client certificate and checks no revocation list; remove it (sslmode and sslrootcert are supported)"
                ))
            }
            _ => rest.push(p),
        }
    }
    let driver_url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((driver_url, opts))
}

/// `%XX` escapes decoded (a path in a URL may need them); anything malformed is kept as is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The driver's own `sslmode` for ours: the driver negotiates, our connector verifies.
pub(crate) fn driver_mode(mode: SslMode) -> tokio_postgres::config::SslMode {
    match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    }
}

/// The connector handed to the driver and the pools: one rustls configuration, shared by
/// every connection of a store.
#[derive(Clone)]
pub struct MakeRustls {
    /// `None` for `sslmode=disable` (the driver then never asks for a handshake).
    config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeRustls")
            .field("tls", &self.config.is_some())
            .finish()
    }
}

impl MakeRustls {
    /// Builds the rustls configuration for `opts`, reading `sslrootcert` now so that a
    /// missing or unreadable file is an error at start-up, not at the first connection.
    pub fn new(opts: &TlsOptions) -> Result<Self, String> {
        if opts.mode == SslMode::Disable {
            return Ok(MakeRustls { config: None });
        }
        // The same provider reqwest's rustls uses, named here rather than taken from a
        // process-wide default that another crate may or may not have installed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &opts.root_cert {
            Some(root) => Some(load_roots(root)?),
            None => None,
        };
        let chain = |roots: RootCertStore| {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert: cannot use these roots: {e}"))
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (opts.mode, roots) {
            (SslMode::Prefer, _) | (SslMode::Require, None) => {
                Arc::new(NoVerify(provider.clone()))
            }
            (SslMode::Require | SslMode::VerifyCa, Some(roots)) => Arc::new(ChainOnly(chain(roots)?)),
            (SslMode::VerifyFull, Some(roots)) => chain(roots)?,
            (mode @ (SslMode::VerifyCa | SslMode::VerifyFull), None) => {
                return Err(format!(
                    "sslmode={} needs sslrootcert: the path of a PEM file of the CA that signed the server's certificate (or sslrootcert=system for the public web roots)",
                    mode.as_str()
                ))
            }
            (SslMode::Disable, _) => return Ok(MakeRustls { config: None }),
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // PostgreSQL 17 and later check the ALPN name on direct TLS; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustls {
            config: Some(Arc::new(config)),
        })
    }
}

fn load_roots(root: &RootCert) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::System => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        RootCert::File(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert={shown}: cannot read it: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert={shown}: not a PEM file: {e}"))?;
                store.add(cert).map_err(|e| {
                    format!("sslrootcert={shown}: a certificate in it is not usable: {e}")
                })?;
            }
            if store.is_empty() {
                return Err(format!(
                    "sslrootcert={shown} holds no certificate: give a PEM file with -----BEGIN CERTIFICATE----- blocks"
                ));
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain is checked, the name is not. webpki checks the name only after the
/// chain, so a name error means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
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
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require`: any certificate is accepted (libpq's meaning of these modes: the
/// traffic is encrypted, the server is not authenticated). The handshake signatures are still
/// checked, so the session is with whoever holds the certificate's key.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        // Called for every connection, unix sockets and `disable` included: a bad name is
        // only an error if a handshake is actually attempted.
        Ok(RustlsConnect {
            config: self.config.clone(),
            server_name: ServerName::try_from(domain.to_owned()).ok(),
            domain: domain.to_owned(),
        })
    }
}

/// One handshake's worth of [`MakeRustls`].
pub struct RustlsConnect {
    config: Option<Arc<ClientConfig>>,
    server_name: Option<ServerName<'static>>,
    domain: String,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS is off (sslmode=disable)"))?;
            let name = self.server_name.ok_or_else(|| {
                io::Error::other(format!(
                    "{:?} is not a host name or IP address TLS can check",
                    self.domain
                ))
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS connection to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        match conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| tls_server_end_point(cert.as_ref()))
        {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            // SCRAM then authenticates without the channel-binding variant (the default
            // `channel_binding=prefer` accepts that).
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929 `tls-server-end-point`: the server certificate hashed with its signature's hash
/// (SHA-256 for MD5 and SHA-1). It ties SCRAM authentication to this TLS session, so a
/// man in the middle cannot relay it — what makes `require` without verification still
/// safe for SCRAM passwords. `None` for signature algorithms without one hash (RSA-PSS,
/// Ed25519); authentication then goes without channel binding.
fn tls_server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let (_, cert, _) = der_element(der)?;
    let (_, _tbs, rest) = der_element(cert)?;
    let (_, alg, _) = der_element(rest)?;
    let (tag, oid, _) = der_element(alg)?;
    if tag != 0x06 {
        return None;
    }
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    let bits = match oid {
        _ if oid == ECDSA_SHA1 => 256,
        [p @ .., last] if p == RSA => match last {
            0x04 | 0x05 | 0x0b => 256, // md5, sha1, sha256 WithRSAEncryption
            0x0c => 384,
            0x0d => 512,
            _ => return None,
        },
        [p @ .., last] if p == ECDSA_SHA2 => match last {
            0x02 => 256,
            0x03 => 384,
            0x04 => 512,
            _ => return None,
        },
        _ => return None,
    };
    Some(match bits {
        256 => sha2::Sha256::digest(der).to_vec(),
        384 => sha2::Sha384::digest(der).to_vec(),
        _ => sha2::Sha512::digest(der).to_vec(),
    })
}

/// One DER element at the start of `b`: its tag, its contents and what follows it.
fn der_element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = if first < 0x80 {
        (usize::from(first), b)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (bytes, b) = b.split_at(n);
        (
            bytes
                .iter()
                .fold(0usize, |acc, &x| (acc << 8) | usize::from(x)),
            b,
        )
    };
    if b.len() < len {
        return None;
    }
    let (contents, rest) = b.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_split_off_the_url() {
        let (url, opts) =
            split_tls("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem&application_name=a")
                .unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=a");
        assert_eq!(opts.mode, SslMode::VerifyFull);
        assert_eq!(
            opts.root_cert,
            Some(RootCert::File(PathBuf::from("/tmp/ca x.pem")))
        );
        let (url, opts) = split_tls("postgres://u@h/db").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(opts, TlsOptions::default());
        assert_eq!(opts.mode, SslMode::Prefer);
        let (url, opts) =
            split_tls("postgres://u@h/db?sslmode=require&sslrootcert=system").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(opts.root_cert, Some(RootCert::System));
    }

    #[test]
    fn bad_tls_parameters_name_the_parameter() {
        let e = split_tls("postgres://h/db?sslmode=verify").unwrap_err();
        assert!(e.contains("sslmode") && e.contains("verify-full"), "{e}");
        let e = split_tls("postgres://h/db?sslmode=allow").unwrap_err();
        assert!(e.contains("sslmode=allow"), "{e}");
        let e = split_tls("postgres://h/db?sslmode=require&sslcert=/c.pem").unwrap_err();
        assert!(e.starts_with("sslcert is not supported"), "{e}");
        let e = split_tls("postgres://h/db?sslrootcert=").unwrap_err();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = MakeRustls::new(&TlsOptions {
            mode: SslMode::VerifyFull,
            root_cert: None,
        })
        .unwrap_err();
        assert!(e.contains("sslmode=verify-full needs sslrootcert"), "{e}");
        let e = MakeRustls::new(&TlsOptions {
            mode: SslMode::VerifyCa,
            root_cert: Some(RootCert::File("/nonexistent/ca.pem".into())),
        })
        .unwrap_err();
        assert!(e.contains("sslrootcert=/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("mend-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = MakeRustls::new(&TlsOptions {
            mode: SslMode::VerifyCa,
            root_cert: Some(RootCert::File(empty)),
        })
        .unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn channel_binding_needs_a_certificate_it_can_read() {
        assert_eq!(tls_server_end_point(b""), None);
        assert_eq!(tls_server_end_point(&[0x30, 0x82, 0xff]), None);
        assert_eq!(tls_server_end_point(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        assert_eq!(
            der_element(&[0x06, 0x01, 0x2a, 0x05]),
            Some((0x06, &[0x2a][..], &[0x05][..]))
        );
    }

    #[test]
    fn every_mode_builds_a_connector() {
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
            assert!(MakeRustls::new(&TlsOptions {
                mode,
                root_cert: None
            })
            .is_ok());
        }
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            assert!(MakeRustls::new(&TlsOptions {
                mode,
                root_cert: Some(RootCert::System),
            })
            .is_ok());
        }
        assert!(MakeRustls::new(&TlsOptions::default())
            .unwrap()
            .config
            .is_some());
    }
}
