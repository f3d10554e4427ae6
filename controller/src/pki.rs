//! The fleet's certificate authority (FLT-3, DESIGN §4).
//!
//! One CA (ECDSA P-256, rcgen) signs the controller's server certificate, the
//! admin certificates cairnctl uses, and each agent's certificate from the CSR
//! it sends with its enrollment token. The controller names a client by the
//! SHA-256 of its certificate, so revoking one is deleting a catalog entry.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

const CA_YEARS: i64 = 20;
const LEAF_YEARS: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate as first written: what clients trust and pin.
    pub cert_pem: String,
}

fn validity(params: &mut CertificateParams, years: i64) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that run behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * years);
}

/// When a certificate in PEM expires (unix seconds).
pub fn not_after(pem: &str) -> Result<i64> {
    Ok(CertificateParams::from_ca_cert_pem(pem)?
        .not_after
        .unix_timestamp())
}

/// When a leaf certificate this controller signed at `signed_at` expires.
pub fn leaf_not_after(signed_at: i64) -> i64 {
    signed_at + 365 * LEAF_YEARS * 86_400
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Cairn");
    dn.push(DnType::CommonName, cn);
    dn
}

impl Ca {
    pub fn create() -> Result<Ca> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name("Cairn fleet CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_YEARS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert,
            key,
        })
    }

    /// Loads a CA written by [`Ca::save`].
    pub fn load(dir: &Path) -> Result<Ca> {
        let cert_pem = read(&dir.join("ca.pem"))?;
        let key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
        // rcgen signs with a Certificate value; one rebuilt from the same
        // params and key has the same subject and key, so what it signs
        // verifies against the original ca.pem.
        let params = CertificateParams::from_ca_cert_pem(&cert_pem)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert,
            key,
            cert_pem,
        })
    }

    /// Writes `ca.pem` (0644) and `ca.key` (0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write(&dir.join("ca.pem"), &self.cert_pem, 0o644)?;
        write(&dir.join("ca.key"), &self.key.serialize_pem(), 0o600)
    }

    /// SHA-256 of `ca.pem` as written (not of the rebuilt signing copy).
    pub fn sha256(&self) -> String {
        let der = cairn_net::cert_der(&self.cert_pem, "CA").expect("our own CA PEM parses");
        cairn_net::fingerprint(&der)
    }

    /// The controller's server certificate for `sans` (host names and IPs).
    pub fn issue_server(&self, sans: &[String]) -> Result<Issued> {
        let mut params = CertificateParams::new(sans.to_vec())?;
        params.distinguished_name = name("cairn-controller");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, LEAF_YEARS);
        self.sign(params)
    }

    /// A client certificate (cairnctl's admin certificate).
    pub fn issue_client(&self, cn: &str) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, LEAF_YEARS);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs an agent's CSR. Only its public key is taken: the subject, usages
    /// and validity are the controller's, whatever the CSR asked for.
    pub fn sign_agent_csr(&self, csr_pem: &str, agent_id: &str) -> Result<String> {
        self.sign_client_csr(csr_pem, agent_id)
    }

    /// Signs a client CSR (an agent's, a cairnctl user's) as `cn`.
    pub fn sign_client_csr(&self, csr_pem: &str, cn: &str) -> Result<String> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, LEAF_YEARS);
        csr.params = params;
        Ok(csr.signed_by(&self.cert, &self.key)?.pem())
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| PkiError::Io {
        path: path.display().to_string(),
        source: e,
    })
}

/// Writes a file atomically with `mode` (keys 0600).
pub fn write(path: &Path, data: &str, mode: u32) -> Result<()> {
    cairn_net::write_file(path, data, mode).map_err(|e| PkiError::Io {
        path: path.display().to_string(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_ca_signs_certificates_the_original_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create().unwrap();
        ca.save(dir.path()).unwrap();
        let again = Ca::load(dir.path()).unwrap();
        assert_eq!(again.cert_pem, ca.cert_pem);
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let cert = again.sign_agent_csr(&csr.pem().unwrap(), "web1").unwrap();
        let server = ca.issue_server(&["127.0.0.1".into()]).unwrap();
        // A TLS config built from the original CA accepts both.
        let id = cairn_net::Identity {
            chain_pem: format!("{}{}", server.cert_pem, ca.cert_pem),
            key_pem: server.key_pem,
        };
        cairn_net::server_config(&ca.cert_pem, &id).unwrap();
        let agent = cairn_net::Identity {
            chain_pem: cert,
            key_pem: key.serialize_pem(),
        };
        cairn_net::client_config(&cairn_net::Trust::Ca(ca.cert_pem.clone()), Some(&agent)).unwrap();
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }
}
