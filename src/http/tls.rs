//! HTTPS termination with rustls: the certificate chain and key are read from PEM files, and
//! read again when either file changes, so a renewed certificate is served without a
//! restart (connections already open keep theirs).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// How often the files' modification times are looked at, at most.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The served certificate, and where it comes from.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Loaded>,
}

struct Loaded {
    acceptor: TlsAcceptor,
    modified: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A TLS acceptor for the chain in `cert` and the key in `key` (PKCS#8, PKCS#1 or SEC1),
/// offering HTTP/2 and HTTP/1.1.
fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls certificate {}: no certificate in it", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls key {}: {e}", key.display()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl TlsFiles {
    /// Reads the files once; a missing or malformed file is an error.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        let loaded = Loaded {
            acceptor: acceptor(&cert, &key)?,
            modified: (modified(&cert), modified(&key)),
            checked: Instant::now(),
        };
        Ok(Self { cert, key, current: Mutex::new(loaded) })
    }

    /// The acceptor for a new connection: the files are read again when they changed since
    /// they were last read. A change that does not load (a half-written file) keeps the
    /// certificate served before, and is tried again at the next check.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.checked.elapsed() >= RELOAD_CHECK {
            current.checked = Instant::now();
            let now = (modified(&self.cert), modified(&self.key));
            if now != current.modified {
                match acceptor(&self.cert, &self.key) {
                    Ok(reloaded) => {
                        tracing::info!(cert = %self.cert.display(), "tls certificate reloaded");
                        current.acceptor = reloaded;
                        current.modified = now;
                    }
                    Err(e) => tracing::warn!(error = %e, "tls certificate not reloaded"),
                }
            }
        }
        current.acceptor.clone()
    }
}
