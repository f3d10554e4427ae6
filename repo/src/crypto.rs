//! Blob crypto: keyed blob ids, compression, and the AES-256-GCM envelope.
//!
//! # Envelope layout (format v1 — never change these bytes)
//!
//! Every encrypted object (a blob inside a pack, a pack header, an index
//! segment, a snapshot, the config) is one envelope:
//!
//! ```text
//! offset size  field
//! 0      1     envelope version, 0x01
//! 1      4     key id, u32 little-endian (first 4 bytes of BLAKE3(encryption key))
//! 5      12    random 96-bit nonce
//! 17     n+16  AES-256-GCM ciphertext + tag; associated data = bytes 0..5
//! ```
//!
//! The plaintext of an envelope starts with one byte naming its encoding:
//! `0x00` raw, `0x01` a zstd frame. Compression is skipped when it saves less
//! than 3% (already-compressed images and archives). Format v1.1 adds `0x02`:
//! a group of small blobs in one zstd frame (see `group`), which only blob
//! reads accept.
//!
//! A blob's id is BLAKE3 keyed with the repository's id key over the blob's
//! uncompressed plaintext, so a storage operator cannot confirm a guessed file.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use crate::error::{Error, Result};
use crate::id::Id;

pub const ENVELOPE_VERSION: u8 = 1;
pub const ENVELOPE_HEADER: usize = 1 + 4 + 12;
pub const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its plaintext (header, tag, encoding byte).
pub const ENVELOPE_OVERHEAD: usize = ENVELOPE_HEADER + TAG_LEN + 1;

const ENC_RAW: u8 = 0;
const ENC_ZSTD: u8 = 1;
pub(crate) const ENC_GROUP: u8 = 2;
/// A group whose rows are laid out by column (format v1.3, see `columns`).
pub(crate) const ENC_GROUP_COLUMNS: u8 = 3;
const MIN_COMPRESS: usize = 64;

/// The largest plaintext any envelope may open to. Blobs are far smaller
/// (file chunks ≤ 4 MiB, trees of huge directories a few tens of MiB); the
/// bound exists so a zstd bomb fails instead of exhausting memory.
pub const MAX_PLAIN: usize = 256 << 20;

/// The repository's master key: one data-encryption key and the blob-id key.
#[derive(Clone)]
pub struct MasterKey {
    enc: [u8; 32],
    id_key: [u8; 32],
    cipher: Aes256Gcm,
    key_id: u32,
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut enc = [0u8; 32];
        let mut id_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut enc);
        rand::thread_rng().fill_bytes(&mut id_key);
        MasterKey::from_parts(enc, id_key)
    }

    pub(crate) fn from_parts(enc: [u8; 32], id_key: [u8; 32]) -> MasterKey {
        let key_id = u32::from_le_bytes(blake3::hash(&enc).as_bytes()[..4].try_into().unwrap());
        let cipher = Aes256Gcm::new_from_slice(&enc).expect("32-byte key");
        MasterKey {
            enc,
            id_key,
            cipher,
            key_id,
        }
    }

    /// 64 bytes: encryption key then id key. Only ever stored wrapped (see `keys`).
    pub(crate) fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.enc);
        out[32..].copy_from_slice(&self.id_key);
        out
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<MasterKey> {
        if b.len() != 64 {
            return None;
        }
        Some(MasterKey::from_parts(
            b[..32].try_into().ok()?,
            b[32..].try_into().ok()?,
        ))
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The id of a blob with this plaintext.
    pub fn blob_id(&self, plain: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, plain).as_bytes())
    }

    /// Seed of the content-defined chunker's gear table, secret per repository so
    /// chunk boundaries do not reveal file contents.
    pub fn chunker_seed(&self) -> u64 {
        u64::from_le_bytes(
            blake3::keyed_hash(&self.id_key, b"cairn chunker seed v1").as_bytes()[..8]
                .try_into()
                .unwrap(),
        )
    }

    /// Compresses (when it pays) and encrypts `plain` into one envelope.
    pub fn seal(&self, plain: &[u8], zstd_level: i32) -> Vec<u8> {
        let mut body = Vec::with_capacity(plain.len() + 1);
        let compressed = if plain.len() >= MIN_COMPRESS && zstd_level > 0 {
            compress(plain, zstd_level)
        } else {
            None
        };
        match compressed {
            Some(c) if c.len() < plain.len() - plain.len() / 33 => {
                body.push(ENC_ZSTD);
                body.extend_from_slice(&c);
            }
            _ => {
                body.push(ENC_RAW);
                body.extend_from_slice(plain);
            }
        }
        self.encrypt(&body)
    }

    fn encrypt(&self, body: &[u8]) -> Vec<u8> {
        let mut header = [0u8; ENVELOPE_HEADER];
        header[0] = ENVELOPE_VERSION;
        header[1..5].copy_from_slice(&self.key_id.to_le_bytes());
        rand::thread_rng().fill_bytes(&mut header[5..]);
        let nonce = Nonce::from_slice(&header[5..]);
        let ct = self
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: body,
                    aad: &header[..5],
                },
            )
            .expect("AES-GCM encryption cannot fail for in-memory buffers");
        let mut out = Vec::with_capacity(ENVELOPE_HEADER + ct.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&ct);
        out
    }

    /// Verifies the tag, decrypts and decompresses one envelope. `what` names the
    /// object in errors.
    pub fn open(&self, envelope: &[u8], what: &dyn std::fmt::Display) -> Result<Vec<u8>> {
        self.open_bounded(envelope, what, MAX_PLAIN)
    }

    /// Like [`MasterKey::open`], failing once the plaintext would exceed `max`
    /// bytes (decompression stops there: nothing larger is ever allocated).
    pub fn open_bounded(
        &self,
        envelope: &[u8],
        what: &dyn std::fmt::Display,
        max: usize,
    ) -> Result<Vec<u8>> {
        single(self.decrypt(envelope, what)?, what, max)
    }

    /// Verifies the tag and decrypts one envelope: its encoding byte, then its body.
    pub(crate) fn decrypt(&self, envelope: &[u8], what: &dyn std::fmt::Display) -> Result<Vec<u8>> {
        if envelope.len() < ENVELOPE_HEADER + TAG_LEN + 1 {
            return Err(Error::corrupt(what.to_string(), "envelope too short"));
        }
        if envelope[0] != ENVELOPE_VERSION {
            return Err(Error::corrupt(
                what.to_string(),
                format!("unknown envelope version {}", envelope[0]),
            ));
        }
        let key_id = u32::from_le_bytes(envelope[1..5].try_into().unwrap());
        if key_id != self.key_id {
            return Err(Error::corrupt(
                what.to_string(),
                format!("encrypted with unknown key id {key_id:08x}"),
            ));
        }
        let nonce = Nonce::from_slice(&envelope[5..ENVELOPE_HEADER]);
        let body = self
            .cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &envelope[ENVELOPE_HEADER..],
                    aad: &envelope[..5],
                },
            )
            .map_err(|_| Error::corrupt(what.to_string(), "authentication tag mismatch"))?;
        if body.is_empty() {
            return Err(Error::corrupt(what.to_string(), "unknown encoding byte"));
        }
        Ok(body)
    }

    /// Opens a blob envelope and checks that its plaintext hashes to `id`.
    pub fn open_blob(&self, id: &Id, envelope: &[u8]) -> Result<Vec<u8>> {
        self.open_blob_bounded(id, envelope, MAX_PLAIN)
    }

    /// Like [`MasterKey::open_blob`], with the plaintext bounded by `max`.
    pub fn open_blob_bounded(&self, id: &Id, envelope: &[u8], max: usize) -> Result<Vec<u8>> {
        Ok(self.open_blob_scoped(id, envelope, max)?.0)
    }

    /// Opens a blob that may be a member of a group (then the group's scope
    /// comes with it). Members of one group read one after the other are
    /// decrypted and decompressed once.
    pub fn open_blob_scoped(
        &self,
        id: &Id,
        envelope: &[u8],
        max: usize,
    ) -> Result<(Vec<u8>, Option<Id>)> {
        if let Some(found) = crate::group::cached_member(id, envelope, max) {
            return found;
        }
        let what = format_args!("blob {id}");
        let body = self.decrypt(envelope, &what)?;
        if matches!(body[0], ENC_GROUP | ENC_GROUP_COLUMNS) {
            let group = crate::group::decode(self, &body, &what, crate::group::MAX_GROUP_PLAIN)?;
            return crate::group::cache_and_take(group, id, envelope, max);
        }
        let plain = single(body, &what, max)?;
        if self.blob_id(&plain) != *id {
            return Err(Error::corrupt(
                format!("blob {id}"),
                "content does not match its id",
            ));
        }
        Ok((plain, None))
    }

    /// The key that ids the members of groups of `scope`: keyed by the id key,
    /// so it is as secret as blob ids are, and separate from single blobs' ids.
    pub(crate) fn member_key(&self, scope: &Id) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.id_key);
        h.update(b"cairn group member key v1\0");
        h.update(&scope.0);
        *h.finalize().as_bytes()
    }

    /// The scope a writer named `name` (a host and domain) groups blobs under.
    pub fn group_scope(&self, name: &str) -> Id {
        let mut h = blake3::Hasher::new_keyed(&self.id_key);
        h.update(b"cairn group scope v1\0");
        h.update(name.as_bytes());
        Id(*h.finalize().as_bytes())
    }

    /// Compresses `plain`, a group's table and members laid out as `group`
    /// describes, and encrypts it as a group (writers use `group::seal`).
    pub fn seal_group_body(&self, plain: &[u8], zstd_level: i32) -> Vec<u8> {
        self.seal_group_encoded(ENC_GROUP, plain, zstd_level)
    }

    /// Compresses a group's bytes in the layout `encoding` names and
    /// encrypts them.
    pub(crate) fn seal_group_encoded(
        &self,
        encoding: u8,
        bytes: &[u8],
        zstd_level: i32,
    ) -> Vec<u8> {
        let c = compress(bytes, zstd_level.max(1)).expect("zstd compresses a buffer in memory");
        let mut body = Vec::with_capacity(c.len() + 1);
        body.push(encoding);
        body.extend_from_slice(&c);
        self.encrypt(&body)
    }
}

/// The plaintext of a decrypted body that holds one object.
fn single(mut body: Vec<u8>, what: &dyn std::fmt::Display, max: usize) -> Result<Vec<u8>> {
    match body[0] {
        ENC_RAW if body.len() - 1 > max => Err(Error::corrupt(
            what.to_string(),
            format!("plaintext exceeds {max} bytes"),
        )),
        ENC_RAW => {
            body.remove(0);
            Ok(body)
        }
        ENC_ZSTD => inflate(&body[1..], what, max),
        ENC_GROUP | ENC_GROUP_COLUMNS => Err(Error::corrupt(
            what.to_string(),
            "a group of blobs where one object was expected",
        )),
        _ => Err(Error::corrupt(what.to_string(), "unknown encoding byte")),
    }
}

/// Decompresses one zstd frame, failing once it would exceed `max` bytes.
pub(crate) fn inflate(frame: &[u8], what: &dyn std::fmt::Display, max: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let zerr = |e: std::io::Error| Error::corrupt(what.to_string(), format!("zstd: {e}"));
    let dec = zstd::stream::read::Decoder::with_buffer(frame).map_err(zerr)?;
    let mut out = Vec::new();
    dec.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(zerr)?;
    if out.len() > max {
        return Err(Error::corrupt(
            what.to_string(),
            format!("plaintext exceeds {max} bytes"),
        ));
    }
    Ok(out)
}

thread_local! {
    /// One zstd context per thread and level: creating one per blob cost as
    /// much as compressing a 2 KiB dump chunk.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(plain: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        c.as_mut().expect("just set").1.compress(plain).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_compressible_and_not() {
        let k = MasterKey::generate();
        let text = b"hello hello hello hello hello hello hello hello hello hello hello".repeat(100);
        let random: Vec<u8> = (0..10_000).map(|_| rand::random()).collect();
        for plain in [&text[..], &random[..], b"", b"x"] {
            let env = k.seal(plain, 3);
            assert_eq!(k.open(&env, &"t").unwrap(), plain);
        }
        assert!(
            k.seal(&text, 3).len() < text.len() / 4,
            "text must compress"
        );
        assert_eq!(
            k.seal(&random, 3).len(),
            random.len() + ENVELOPE_OVERHEAD,
            "random stays raw"
        );
    }

    #[test]
    fn tampering_is_detected() {
        let k = MasterKey::generate();
        let mut env = k.seal(b"some secret content", 3);
        let n = env.len();
        env[n - 20] ^= 1;
        assert!(matches!(k.open(&env, &"t"), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_ne!(a.blob_id(b"same"), b.blob_id(b"same"));
        assert_eq!(a.blob_id(b"same"), a.blob_id(b"same"));
    }

    /// A small envelope that decompresses to far more than its bound fails
    /// without producing the plaintext.
    #[test]
    fn zstd_bomb_is_bounded() {
        let k = MasterKey::generate();
        let env = k.seal(&vec![0u8; 8 << 20], 19);
        assert!(env.len() < 4096, "a bomb is small: {}", env.len());
        let err = k.open_bounded(&env, &"bomb", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
        assert_eq!(
            k.open_bounded(&env, &"bomb", 8 << 20).unwrap().len(),
            8 << 20
        );
        let raw = k.seal(&rand::random::<[u8; 32]>(), 3);
        assert!(k.open_bounded(&raw, &"raw", 31).is_err());
    }

    #[test]
    fn wrong_id_is_detected() {
        let k = MasterKey::generate();
        let env = k.seal(b"data", 3);
        let wrong = k.blob_id(b"other");
        assert!(k.open_blob(&wrong, &env).is_err());
        assert_eq!(k.open_blob(&k.blob_id(b"data"), &env).unwrap(), b"data");
    }
}
