//! Writing unpacked files: the reader side hashes, the disk side creates
//! and writes.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::fs::{self, FsError};

/// Why a file could not be written.
pub(super) enum WriteError {
    /// The archive stream failed (corrupt, truncated, or a limit tripped).
    Read(io::Error),
    /// The file grew past the byte budget it was given.
    Budget,
    /// This machine's disk failed.
    Fs(FsError),
}

/// Writes the files of one release.
pub(super) struct Files {
    buf: Vec<u8>,
}

impl Files {
    pub(super) fn new() -> Self {
        Files {
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// Writes `data` to the new file `path` with permission bits `mode`,
    /// refusing more than `budget` bytes; returns its size and SHA-256 (hex).
    pub(super) fn write(
        &mut self,
        path: &Path,
        mode: u32,
        mtime: Option<u64>,
        data: &mut dyn Read,
        budget: u64,
    ) -> Result<(u64, String), WriteError> {
        let mut f = fs::create_new(path, 0o600).map_err(WriteError::Fs)?;
        let mut sha = Sha256::new();
        let mut n = 0u64;
        // Read and write errors mean different things: a failed read is
        // a corrupt or truncated archive (or a limit reached), a failed
        // write is this machine's disk.
        loop {
            let k = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WriteError::Read(e)),
            };
            if n + k as u64 > budget {
                return Err(WriteError::Budget);
            }
            sha.update(&self.buf[..k]);
            f.write_all(&self.buf[..k])
                .map_err(|e| WriteError::Fs(FsError::new("write", path, e)))?;
            n += k as u64;
        }
        if let Some(mtime) = mtime {
            let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
        }
        drop(f);
        fs::set_mode(path, mode).map_err(WriteError::Fs)?;
        Ok((n, hex::encode(sha.finalize())))
    }

    /// Waits until `path` is completely written (before a hard link to it).
    pub(super) fn wait_for(&mut self, _path: &Path) -> Result<(), FsError> {
        Ok(())
    }

    /// Waits for every file to be written.
    pub(super) fn finish(&mut self) -> Result<(), FsError> {
        Ok(())
    }
}
