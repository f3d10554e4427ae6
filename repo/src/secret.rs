//! Secrets kept in files (passphrases): one reader, one set of rules, so the
//! controller and `cairnctl` derive the same key from the same file.
//!
//! The secret is the file's first line, without its `\n` or `\r\n`. A file
//! that its group or others may read is refused: a passphrase is the whole
//! repository.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} may be read by its group or others (mode {mode:o}); chmod 600 it")]
    Exposed { path: String, mode: u32 },
    #[error("{path} is empty")]
    Empty { path: String },
}

/// Reads the secret in `path` under the rules above.
pub fn read_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    let p = || path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| SecretError::Io { path: p(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        return Err(SecretError::Exposed { path: p(), mode });
    }
    let bytes = std::fs::read(path).map_err(|source| SecretError::Io { path: p(), source })?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(SecretError::Empty { path: p() });
    }
    Ok(line.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_private_only() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pass");
        // (file contents, mode, the secret read or None for a refusal)
        type Case<'a> = (&'a [u8], u32, Option<&'a [u8]>);
        let cases: [Case; 6] = [
            (b"secret\n", 0o600, Some(b"secret")),
            (b"secret\r\nsecond line\n", 0o400, Some(b"secret")),
            (b"no newline", 0o600, Some(b"no newline")),
            (b"secret\n", 0o640, None),
            (b"secret\n", 0o604, None),
            (b"\nsecret\n", 0o600, None),
        ];
        for (data, mode, want) in cases {
            std::fs::write(&f, data).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_file(&f).ok().as_deref(), want, "{data:?} {mode:o}");
        }
    }
}
