//! TLS for `stomp+ssl://` endpoints, by rustls: system or configured CA, optional client certificate.

use super::error::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

/// Where trust and identity come from for TLS connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust; when unset, the system's roots are used.
    pub ca_file: Option<PathBuf>,
    /// Also trust the system's roots when `ca_file` is set.
    pub also_system_roots: bool,
    /// PEM client certificate chain, for brokers that require client authentication.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key: Option<PathBuf>,
    /// Name to verify the broker's certificate against, when it differs from the URL host.
    pub server_name: Option<String>,
}

/// Reads every certificate of a PEM file.
fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>> {
    let io = |source| Error::Io { what: format!("reading certificates from {}", path.display()), source };
    let data = std::fs::read(path).map_err(io)?;
    let certs = rustls_pemfile::certs(&mut data.as_slice()).collect::<std::result::Result<Vec<_>, _>>().map_err(io)?;
    if certs.is_empty() {
        return Err(Error::Tls { endpoint: String::new(), why: format!("no PEM certificate in {}", path.display()) });
    }
    Ok(certs)
}

/// Builds a rustls connector from the configuration.
pub fn connector(config: &TlsConfig) -> Result<TlsConnector> {
    let tls_err = |why: String| Error::Tls { endpoint: String::new(), why };
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &config.ca_file {
        for cert in read_certs(ca)? {
            roots.add(cert).map_err(|e| tls_err(format!("bad CA certificate in {}: {e}", ca.display())))?;
        }
    }
    if config.ca_file.is_none() || config.also_system_roots {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(tls_err("no system CA certificates found; set a CA file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().map_err(|e| tls_err(e.to_string()))?.with_root_certificates(roots);
    let client = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let io = |source| Error::Io { what: format!("reading private key from {}", key.display()), source };
            let data = std::fs::read(key).map_err(io)?;
            let key_der: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut data.as_slice()).map_err(io)?.ok_or_else(|| tls_err(format!("no PEM private key in {}", key.display())))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| tls_err(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(tls_err("client_cert and client_key must be set together".into())),
    };
    Ok(TlsConnector::from(Arc::new(client)))
}

/// The name to verify for `host`, honouring an override.
pub fn server_name(config: &TlsConfig, host: &str) -> Result<ServerName<'static>> {
    let name = config.server_name.as_deref().unwrap_or(host).to_owned();
    ServerName::try_from(name.clone()).map_err(|_| Error::Tls { endpoint: host.to_owned(), why: format!("{name:?} is not a valid TLS server name") })
}
