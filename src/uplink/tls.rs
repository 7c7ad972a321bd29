//! TLS for the uplink's MQTT and HTTPS transports (the shared builder in
//! [`crate::tls`]).

use super::options::TlsFiles;
use super::UplinkError;
use std::sync::Arc;

pub fn client_config(tls: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, UplinkError> {
    crate::tls::client_config(tls).map_err(|e| UplinkError::Tls(e.to_string()))
}
