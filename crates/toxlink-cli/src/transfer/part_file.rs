//! The receiver's file until it is verified: `DIR/.NAME.part-<random>`,
//! removed unless [`PartFile::finish`] succeeds; and the room check of an
//! offer.

use super::*;
use rand_core::RngCore;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use toxlink_cli::text::hex;

/// Longest file name on Linux file systems (NAME_MAX), part files included.
const NAME_MAX: usize = 255;

/// The part file name `.NAME.part-XXXXXXXX` of `name`, NAME shortened on a
/// character boundary so the whole is at most [`NAME_MAX`] bytes.
pub fn part_file_name(name: &str, tag: u32) -> String {
    let suffix = format!(".part-{tag:08x}");
    let mut end = name.len().min(NAME_MAX - 1 - suffix.len());
    // At most 3 steps back: a UTF-8 character is at most 4 bytes.
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}{suffix}", name.get(..end).unwrap_or_default())
}

/// Refuses an offer of `size` bytes larger than `max_size` or than the
/// space free for us in `dir` (statvfs: available blocks × fragment size).
pub fn check_room(dir: &Path, size: u64, max_size: Option<u64>) -> Result<(), TransferError> {
    if let Some(max) = max_size.filter(|&m| size > m) {
        return Err(TransferError::Refused(format!(
            "file of {size} bytes is larger than the receiver's --max-size of {max} bytes"
        )));
    }
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| TransferError::Io(dir.display().to_string(), e.into()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if size > free {
        return Err(TransferError::Refused(format!(
            "file of {size} bytes does not fit: {free} bytes free in the receiver's directory"
        )));
    }
    Ok(())
}

/// A file being received: `DIR/.NAME.part-<random>` until verified. Dropped
/// before [`finish`](Self::finish) succeeds, it removes the part file.
#[derive(Debug)]
pub struct PartFile {
    part: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    hasher: Sha256,
    written: u64,
    offer: Offer,
    overwrite: bool,
}

impl PartFile {
    /// Validates the offer against `dir` and creates the part file.
    pub fn create(
        dir: &Path,
        offer: Offer,
        overwrite: bool,
        rng: &mut impl RngCore,
    ) -> Result<PartFile, TransferError> {
        validate_name(&offer.name).map_err(TransferError::Refused)?;
        let target = dir.join(&offer.name);
        if !overwrite && target.symlink_metadata().is_ok() {
            return Err(TransferError::Refused(format!(
                "{}: file exists (use --overwrite)",
                target.display()
            )));
        }
        if overwrite && target.is_dir() {
            return Err(TransferError::Refused(format!(
                "{}: is a directory",
                target.display()
            )));
        }
        let part = dir.join(part_file_name(&offer.name, rng.next_u32()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .map_err(|e| TransferError::Io(part.display().to_string(), e))?;
        Ok(PartFile {
            part,
            target,
            dir: dir.to_path_buf(),
            file: Some(std::io::BufWriter::with_capacity(1 << 16, file)),
            hasher: Sha256::new(),
            written: 0,
            offer,
            overwrite,
        })
    }

    /// The part file's path.
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends data; refuses more than the offered size.
    pub fn write(&mut self, data: &[u8]) -> Result<(), TransferError> {
        let total = self.written + data.len() as u64;
        if total > self.offer.size {
            return Err(TransferError::Verify(format!(
                "more data than the offered {} bytes",
                self.offer.size
            )));
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| TransferError::Verify("write after finish".into()))?;
        f.write_all(data)
            .map_err(|e| TransferError::Io(self.part.display().to_string(), e))?;
        self.hasher.update(data);
        self.written = total;
        Ok(())
    }

    /// Verifies size and SHA-256, fsyncs and moves the file into place;
    /// returns the final path.
    pub fn finish(mut self) -> Result<PathBuf, TransferError> {
        if self.written != self.offer.size {
            return Err(TransferError::Verify(format!(
                "got {} of {} bytes",
                self.written, self.offer.size
            )));
        }
        let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if got != self.offer.sha256 {
            return Err(TransferError::Verify(format!(
                "SHA-256 {} differs from the offered {}",
                hex(&got),
                hex(&self.offer.sha256)
            )));
        }
        let io = |p: &Path, e| TransferError::Io(p.display().to_string(), e);
        let file = self
            .file
            .take()
            .ok_or_else(|| TransferError::Verify("finished twice".into()))?;
        let file = file
            .into_inner()
            .map_err(|e| io(&self.part, e.into_error()))?;
        file.sync_all().map_err(|e| io(&self.part, e))?;
        drop(file);
        if self.overwrite {
            std::fs::rename(&self.part, &self.target).map_err(|e| io(&self.target, e))?;
        } else {
            // A hard link fails if the name exists by now: never overwrite.
            std::fs::hard_link(&self.part, &self.target).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    TransferError::Refused(format!(
                        "{}: file exists (use --overwrite)",
                        self.target.display()
                    ))
                } else {
                    io(&self.target, e)
                }
            })?;
            std::fs::remove_file(&self.part).map_err(|e| io(&self.part, e))?;
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.written = u64::MAX; // marks success for drop
        Ok(self.target.clone())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.written != u64::MAX {
            self.file = None;
            if let Err(e) = std::fs::remove_file(&self.part) {
                tracing::warn!(path = %self.part.display(), error = %e, "cannot remove part file");
            }
        }
    }
}
