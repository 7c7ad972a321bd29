//! TLS configuration shared by every MQTT and HTTPS connection (and the HTTPS API
//! server): rustls on the
//! `ring` provider (no aws-lc), roots from a CA file or the system's, and a client
//! certificate when one is configured.
//!
//! reqwest (built with `rustls-no-provider`) panics when it builds a client while no
//! process-wide rustls provider is installed, even for plain `http://`. `hazgate`
//! installs ring once at start; library code builds every HTTP client through
//! [`http_client_builder`], which installs it first if nobody did (a library user, a
//! test), so no code path depends on `main` having run.

use std::sync::Arc;

/// Install rustls's `ring` provider as the process default unless one is installed
/// already (by us or by the embedding program; theirs is kept).
pub fn ensure_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one in between: fine either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A reqwest client builder that is safe to `build()`: the rustls provider is in place.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    ensure_provider();
    reqwest::Client::builder()
}

/// TLS files (PEM).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// CA certificates; `None` = the system's roots.
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Tls(String),
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| bad(path, format!("reading: {e}")))
}

fn bad(path: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Build the client configuration for `tls`.
pub fn client_config(tls: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let pem = read(path)?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| bad(path, e))?;
                roots.add(cert).map_err(|e| bad(path, e))?;
            }
            if roots.is_empty() {
                return Err(bad(path, "no certificate found"));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::Tls(
                    "no system CA certificates found; set `ca_file`".into(),
                ));
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Tls(e.to_string()))?
    .with_root_certificates(roots);
    let config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let pem = read(cert_path)?;
            let chain = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(cert_path, e))?;
            if chain.is_empty() {
                return Err(bad(cert_path, "no certificate found"));
            }
            let pem = read(key_path)?;
            let key = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| bad(key_path, e))?
                .ok_or_else(|| bad(key_path, "no private key found"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Tls(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Build a server configuration from a PEM certificate chain and its private key
/// (the HTTPS API). TLS 1.3 on the `ring` provider.
pub fn server_config(
    cert_file: &str,
    key_file: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let pem = read(cert_file)?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert_file, e))?;
    if chain.is_empty() {
        return Err(bad(cert_file, "no certificate found"));
    }
    let pem = read(key_file)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| bad(key_file, e))?
        .ok_or_else(|| bad(key_file, "no private key found"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| TlsError::Tls(format!("{cert_file} with {key_file}: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
