//! Key files: the master key wrapped by passphrase-derived keys.
//!
//! # Key file layout (format v1 — never change these fields)
//!
//! `keys/<id>` is plaintext JSON (it must be readable before any key is known);
//! `<id>` is the hex BLAKE3 of the file's bytes:
//!
//! ```json
//! {"version":1,"created":"RFC 3339","hostname":"…","username":"…",
//!  "kdf":"argon2id","m_cost_kib":32768,"t_cost":3,"p_cost":1,
//!  "salt":"base64 (16 bytes)","nonce":"base64 (12 bytes)",
//!  "wrapped":"base64: AES-256-GCM(kek, nonce, master key 64 bytes, aad=b\"cairn-key-v1\")"}
//! ```
//!
//! The key-encryption key is Argon2id(passphrase, salt, m, t, p) → 32 bytes.
//! Every key file wraps the same master key, so adding or changing a passphrase
//! never rewrites data.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::storage::Storage;

const AAD: &[u8] = b"cairn-key-v1";

/// Argon2id cost. The default (32 MiB, 3 passes) is above OWASP's Argon2id
/// minimum (19 MiB, 2 passes), takes ~0.1 s on one core, and keeps the KDF from
/// dominating a backup's peak memory. Older key files keep their own parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 32 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub version: u32,
    pub created: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    pub username: String,
    pub kdf: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    salt: String,
    nonce: String,
    wrapped: String,
}

fn derive(passphrase: &[u8], salt: &[u8], p: KdfParams) -> Result<[u8; 32]> {
    let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
        .map_err(|e| Error::Invalid(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(passphrase, salt, &mut out)
        .map_err(|e| Error::Invalid(format!("argon2: {e}")))?;
    Ok(out)
}

impl KeyFile {
    pub fn wrap(master: &MasterKey, passphrase: &[u8], params: KdfParams) -> Result<KeyFile> {
        if passphrase.is_empty() {
            return Err(Error::Invalid("empty passphrase".into()));
        }
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut salt);
        rand::thread_rng().fill_bytes(&mut nonce);
        let kek = derive(passphrase, &salt, params)?;
        let cipher = Aes256Gcm::new_from_slice(&kek).expect("32-byte key");
        let wrapped = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &master.to_bytes(),
                    aad: AAD,
                },
            )
            .expect("in-memory encryption");
        Ok(KeyFile {
            version: 1,
            created: chrono::Utc::now(),
            hostname: hostname(),
            username: std::env::var("USER").unwrap_or_default(),
            kdf: "argon2id".into(),
            m_cost_kib: params.m_cost_kib,
            t_cost: params.t_cost,
            p_cost: params.p_cost,
            salt: B64.encode(salt),
            nonce: B64.encode(nonce),
            wrapped: B64.encode(wrapped),
        })
    }

    /// `Ok(None)` when the passphrase does not open this key file.
    pub fn unwrap_key(&self, passphrase: &[u8]) -> Result<Option<MasterKey>> {
        if self.version != 1 || self.kdf != "argon2id" {
            return Err(Error::corrupt(
                "key file",
                format!("unsupported version {} / kdf {}", self.version, self.kdf),
            ));
        }
        let dec = |s: &str| {
            B64.decode(s)
                .map_err(|e| Error::corrupt("key file", e.to_string()))
        };
        let (salt, nonce, wrapped) = (dec(&self.salt)?, dec(&self.nonce)?, dec(&self.wrapped)?);
        if nonce.len() != 12 {
            return Err(Error::corrupt("key file", "nonce is not 12 bytes"));
        }
        let params = KdfParams {
            m_cost_kib: self.m_cost_kib,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        };
        let kek = derive(passphrase, &salt, params)?;
        let cipher = Aes256Gcm::new_from_slice(&kek).expect("32-byte key");
        match cipher.decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &wrapped,
                aad: AAD,
            },
        ) {
            Ok(bytes) => Ok(Some(MasterKey::from_bytes(&bytes).ok_or_else(|| {
                Error::corrupt("key file", "master key is not 64 bytes")
            })?)),
            Err(_) => Ok(None),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Writes a new key file and returns its id.
pub fn add(
    storage: &dyn Storage,
    master: &MasterKey,
    passphrase: &[u8],
    params: KdfParams,
) -> Result<Id> {
    let bytes = KeyFile::wrap(master, passphrase, params)?.to_bytes();
    let id = Id::of_stored(&bytes);
    storage.put(&format!("keys/{id}"), &bytes)?;
    Ok(id)
}

/// Every key file in the repository, by id.
pub fn list(storage: &dyn Storage) -> Result<Vec<(Id, KeyFile)>> {
    let mut out = Vec::new();
    for obj in storage.list("keys/")? {
        let name = obj.key.trim_start_matches("keys/");
        let Ok(id) = name.parse::<Id>() else { continue };
        let bytes = storage.get(&obj.key)?;
        let kf: KeyFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("key file {name}"), e.to_string()))?;
        out.push((id, kf));
    }
    out.sort_by_key(|(_, k)| k.created);
    Ok(out)
}

/// Finds the key file `passphrase` opens; `WrongPassphrase` when none does.
pub fn open(storage: &dyn Storage, passphrase: &[u8]) -> Result<(Id, MasterKey)> {
    let keys = list(storage)?;
    if keys.is_empty() {
        return Err(Error::NotARepository {
            repo: storage.location(),
        });
    }
    for (id, kf) in keys {
        if let Some(master) = kf.unwrap_key(passphrase)? {
            return Ok((id, master));
        }
    }
    Err(Error::WrongPassphrase {
        repo: storage.location(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn wrap_unwrap() {
        let m = MasterKey::generate();
        let kf = KeyFile::wrap(&m, b"correct horse", FAST).unwrap();
        let bytes = kf.to_bytes();
        let kf: KeyFile = serde_json::from_slice(&bytes).unwrap();
        let got = kf.unwrap_key(b"correct horse").unwrap().expect("opens");
        assert_eq!(got.to_bytes(), m.to_bytes());
        assert!(kf.unwrap_key(b"wrong").unwrap().is_none());
        assert!(!String::from_utf8_lossy(&bytes).contains("correct horse"));
    }
}
