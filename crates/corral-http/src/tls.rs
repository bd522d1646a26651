//! A server's TLS identity: a certificate it made itself on first start (kept in its data
//! folder, the key readable by its user only) or one it was given, and the fingerprint
//! that clients pin instead of trusting a certificate authority.

use corral_core::tls::Fingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file names of a made certificate and its key, inside the folder given.
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write `{path}`: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` holds no {what} in PEM form")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key cannot serve TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain with its key, ready to serve.
pub struct TlsIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// The certificate in `dir` (made by an earlier start), or a new self-signed one for
    /// `names` written there. The key file is created readable by this user only, and
    /// written before the certificate, so a start that dies in between makes a new pair
    /// next time instead of serving a certificate without its key.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<TlsIdentity, TlsError> {
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if cert_path.is_file() && key_path.is_file() {
            return TlsIdentity::from_pem_files(&cert_path, &key_path);
        }
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let made = rcgen::generate_simple_self_signed(names.to_vec())?;
        write_private(&key_path, made.key_pair.serialize_pem().as_bytes())?;
        write_private(&cert_path, made.cert.pem().as_bytes())?;
        TlsIdentity::from_pem_files(&cert_path, &key_path)
    }

    /// A certificate chain (leaf first) and its private key, both PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        let Some(leaf) = certs.first() else {
            return Err(TlsError::Pem {
                path: cert.to_path_buf(),
                what: "certificate",
            });
        };
        let fingerprint = Fingerprint::of_der(leaf.as_ref());
        let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsError::Pem {
            path: key.to_path_buf(),
            what: "private key",
        })?;
        let identity = TlsIdentity {
            certs,
            key,
            fingerprint,
        };
        // A key that does not match the certificate is found now, not at the first client.
        identity.acceptor()?;
        Ok(identity)
    }

    /// What clients pin: the SHA-256 of the leaf certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The acceptor [`crate::serve_tls`] wraps every connection in (HTTP/1.1 only, as the
    /// server speaks nothing else).
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// The fingerprint of the first certificate in a PEM file (a server's own, read by its
/// health check, which need not read the key).
pub fn certificate_fingerprint(cert: &Path) -> Result<Fingerprint, TlsError> {
    let pem = std::fs::read(cert).map_err(|source| TlsError::Read {
        path: cert.to_path_buf(),
        source,
    })?;
    CertificateDer::pem_slice_iter(&pem)
        .find_map(Result::ok)
        .map(|leaf| Fingerprint::of_der(leaf.as_ref()))
        .ok_or_else(|| TlsError::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
        })
}

/// Writes a new file readable by this user only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| {
            // `mode` applies only to a file it creates: one left by an earlier start
            // keeps its own, so set it again before the key is written.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(bytes).and_then(|()| file.sync_all())
        });
    written.map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_made_certificate_is_kept_and_its_key_is_private() {
        let dir = std::env::temp_dir().join(format!("corral-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = TlsIdentity::load_or_create(&dir, &["corral".into()]).unwrap();
        let again = TlsIdentity::load_or_create(&dir, &["other".into()]).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key mode {mode:o}");
        // A key from another pair is refused at load, not at the first handshake.
        let other = std::env::temp_dir().join(format!("corral-tls-o-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&other);
        TlsIdentity::load_or_create(&other, &["x".into()]).unwrap();
        assert!(TlsIdentity::from_pem_files(&dir.join(CERT_FILE), &other.join(KEY_FILE)).is_err());
        assert!(TlsIdentity::from_pem_files(&dir.join(KEY_FILE), &dir.join(KEY_FILE)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
