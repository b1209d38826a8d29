//! Keys files in tox-bootstrapd's format: 64 bytes, public key ‖ secret key.
//!
//! * Reading ([`read_keys`]) refuses a file that group or others may access
//!   (any of mode 0o077, as ssh does with private keys), one that is not a
//!   regular file, and one that is not exactly 64 consistent bytes; it reads
//!   at most 65 bytes.
//! * Only `toxlink keygen` and `toxlink relay` create keys files
//!   ([`read_or_create_keys`]); the other commands only read them, so a typo
//!   in a path never silently becomes a new identity.
//! * A new file is written to a temporary file (mode 0600) in the same
//!   directory, fsynced, then given its name without overwriting
//!   (`renameat2(RENAME_NOREPLACE)` or `link`, through
//!   `tempfile::NamedTempFile::persist_noclobber`) and the directory fsynced.
//!   Of two runs creating the same file at once, one wins and the other
//!   reads the winner's keys: never two identities, never a partial file.

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use toxlink_proto::crypto::{KeyPair, SecretKey};

/// Size of a keys file.
pub const KEYS_LEN: usize = 64;

/// Why 64 bytes are not a key pair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysFormatError {
    /// Shorter than 64 bytes.
    #[error("{0} bytes, expected 64 (public key ‖ secret key)")]
    Size(usize),
    /// Longer than 64 bytes.
    #[error("more than 64 bytes, expected 64 (public key ‖ secret key)")]
    TooLong,
    /// The public key is not the secret key's.
    #[error("public key does not match the secret key")]
    Mismatch,
}

/// An unusable keys file (one line, naming the file).
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file does not exist (and this command does not create one).
    #[error("keys file {0}: not found (create it with `toxlink keygen --keys-file {0}`)")]
    NotFound(String),
    /// Group or others may read or write it.
    #[error(
        "keys file {path} is accessible by group or others (mode {mode:04o}); \
         run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a regular file.
    #[error("keys file {0}: not a regular file")]
    NotAFile(String),
    /// Bad content.
    #[error("keys file {0}: {1}")]
    Format(String, KeysFormatError),
    /// An I/O error.
    #[error("keys file {0}: {1}")]
    Io(String, std::io::Error),
}

/// Parses the 64 bytes of a keys file.
pub fn parse_keys(bytes: &[u8]) -> Result<KeyPair, KeysFormatError> {
    if bytes.len() > KEYS_LEN {
        return Err(KeysFormatError::TooLong);
    }
    if bytes.len() < KEYS_LEN {
        return Err(KeysFormatError::Size(bytes.len()));
    }
    let (pk, sk) = bytes.split_at(32);
    let mut secret = [0u8; 32];
    secret.copy_from_slice(sk);
    let kp = KeyPair::from_secret(SecretKey(secret));
    if kp.public.0[..] != *pk {
        return Err(KeysFormatError::Mismatch);
    }
    Ok(kp)
}

/// Reads an existing keys file (see the module doc for what is refused).
pub fn read_keys(path: &Path) -> Result<KeyPair, KeysError> {
    let name = path.display().to_string();
    // O_NONBLOCK: opening a FIFO does not wait for a writer (it is then
    // refused as not a regular file); no effect on regular files.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeysError::NotFound(name));
        }
        Err(e) => return Err(KeysError::Io(name, e)),
    };
    // fstat of the opened file: what we check is what we read.
    let meta = f.metadata().map_err(|e| KeysError::Io(name.clone(), e))?;
    if !meta.is_file() {
        return Err(KeysError::NotAFile(name));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeysError::Permissions { path: name, mode });
    }
    let mut bytes = Vec::with_capacity(KEYS_LEN + 1);
    f.take(KEYS_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| KeysError::Io(name.clone(), e))?;
    parse_keys(&bytes).map_err(|e| KeysError::Format(name, e))
}

/// Reads the keys file, or creates it with a fresh key pair if it does not
/// exist (`keygen` and `relay` only). Returns the keys and whether this call
/// created the file.
pub fn read_or_create_keys(path: &Path) -> Result<(KeyPair, bool), KeysError> {
    match read_keys(path) {
        Err(KeysError::NotFound(_)) => create_keys(path),
        r => r.map(|kp| (kp, false)),
    }
}

/// Creates the keys file atomically and exclusively; if another process
/// created it meanwhile, reads that one instead.
fn create_keys(path: &Path) -> Result<(KeyPair, bool), KeysError> {
    let name = path.display().to_string();
    let io = |e| KeysError::Io(name.clone(), e);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let kp = KeyPair::generate(&mut rand_core::OsRng);
    let mut tmp = tempfile::Builder::new()
        .prefix(".toxlink-keys-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(&kp.public.0)
        .and_then(|()| tmp.write_all(&kp.secret.0))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another run created it first (the temporary file is removed
            // with `e`): use its keys.
            tracing::info!(path = %name, "keys file created concurrently; reading it");
            return read_keys(path).map(|kp| (kp, false));
        }
        Err(e) => return Err(io(e.error)),
    }
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync the keys file's directory");
    }
    tracing::info!(path = %name, "created a new keys file");
    Ok((kp, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn keys_file_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        let (kp, created) = read_or_create_keys(&p).unwrap();
        assert!(created);
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), 64);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            entries(dir.path()),
            vec!["keys".to_string()],
            "no temp file left"
        );
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..32], &kp.public.0);
        assert_eq!(read_or_create_keys(&p).unwrap(), (kp.clone(), false));
        assert_eq!(read_keys(&p).unwrap(), kp);
    }

    #[test]
    fn bad_sizes_mismatched_keys_and_non_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        for (content, want) in [
            (vec![1u8; 63], "63 bytes, expected 64"),
            (vec![1u8; 64], "does not match"),
            (vec![1u8; 1 << 20], "more than 64 bytes"),
            (vec![], "0 bytes"),
        ] {
            std::fs::write(&p, &content).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = read_or_create_keys(&p).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("keys file {}: ", p.display())),
                "{e}"
            );
            assert!(e.contains(want), "{e}");
        }
        let e = read_keys(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_keys(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_keys(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not found") && e.contains("toxlink keygen"),
            "{e}"
        );
    }

    #[test]
    fn a_keys_file_accessible_by_group_or_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        let (kp, _) = read_or_create_keys(&p).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o601] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_or_create_keys(&p).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "keys file {0} is accessible by group or others (mode {mode:04o}); \
                     run `chmod 600 {0}`",
                    p.display()
                )
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_keys(&p).unwrap(), kp, "mode {mode:o}");
        }
    }

    #[test]
    fn the_format_is_public_then_secret_key() {
        let kp = KeyPair::from_secret(SecretKey([9; 32]));
        let mut bytes = kp.public.0.to_vec();
        bytes.extend_from_slice(&kp.secret.0);
        assert_eq!(parse_keys(&bytes), Ok(kp));
        bytes.swap(0, 40);
        assert_eq!(parse_keys(&bytes), Err(KeysFormatError::Mismatch));
    }
}
