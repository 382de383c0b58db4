//! Writing unpacked files. Creating a file costs far more kernel time than
//! writing a small one, and one thread creating them one by one leaves the
//! other cores idle: small files are handed, whole, to a few writer
//! threads, while the single reader goes on decompressing. Hashes and sizes
//! are computed on the reader side, as the data streams past, so the
//! manifest does not depend on the writers. Large files are written by the
//! reader itself, streaming, so memory stays bounded: at most
//! [`QUEUED_FILES`] files of at most [`POOLED_MAX`] bytes wait in the queue.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::fs::{self, FsError};

/// Writer threads.
const WRITERS: usize = 4;
/// Files up to this size go to the writers; larger ones are streamed.
const POOLED_MAX: u64 = 256 << 10;
/// Files waiting for a writer: with [`POOLED_MAX`], at most 4 MiB queued.
const QUEUED_FILES: usize = 16;

/// Why a file could not be written.
pub(super) enum WriteError {
    /// The archive stream failed (corrupt, truncated, or a limit tripped).
    Read(io::Error),
    /// The file grew past the byte budget it was given.
    Budget,
    /// This machine's disk failed.
    Fs(FsError),
}

/// A file for a writer thread.
struct Job {
    path: PathBuf,
    mode: u32,
    mtime: Option<u64>,
    data: Vec<u8>,
}

/// Writes the files of one release.
pub(super) struct Files {
    buf: Vec<u8>,
    /// Bits the process umask clears from a new file's mode; a file whose
    /// mode loses none gets it from `open` alone, without a `chmod`.
    umask: u32,
    tx: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// What the writers have done, and when it changes.
    progress: Arc<(Mutex<Progress>, Condvar)>,
    /// Files handed to the writers.
    submitted: u64,
}

/// The writers' side: files written, and the first failure.
#[derive(Default)]
struct Progress {
    written: u64,
    failed: Option<FsError>,
}

/// The process umask, from `/proc/self/status` (reading it with `umask(2)`
/// would change it for a moment under every other thread); when it cannot
/// be read, every mode is set explicitly.
fn current_umask() -> u32 {
    fs::read_to_string(Path::new("/proc/self/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

/// Creates `path` with `mode`, writes `data`, sets its mtime, and sets the
/// mode explicitly only when the umask took bits from it.
fn write_file(
    path: &Path,
    mode: u32,
    umask: u32,
    mtime: Option<u64>,
    data: &[u8],
) -> Result<(), FsError> {
    let mut f = fs::create_new(path, mode)?;
    f.write_all(data)
        .map_err(|e| FsError::new("write", path, e))?;
    finish_file(&f, path, mode, umask, mtime)
}

fn finish_file(
    f: &std::fs::File,
    path: &Path,
    mode: u32,
    umask: u32,
    mtime: Option<u64>,
) -> Result<(), FsError> {
    if let Some(mtime) = mtime {
        let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
    }
    if mode & umask != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::new("set permissions", path, e))?;
    }
    Ok(())
}

impl Files {
    pub(super) fn new() -> Self {
        let (tx, rx) = sync_channel::<Job>(QUEUED_FILES);
        let rx = Arc::new(Mutex::new(rx));
        let progress = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let umask = current_umask();
        let mut workers = Vec::new();
        for i in 0..WRITERS {
            let rx = rx.clone();
            let progress = progress.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("switchyard-write-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let res = write_file(&job.path, job.mode, umask, job.mtime, &job.data);
                        let (lock, changed) = &*progress;
                        if let Ok(mut p) = lock.lock() {
                            p.written += 1;
                            if let Err(e) = res
                                && p.failed.is_none()
                            {
                                p.failed = Some(e);
                            }
                        }
                        changed.notify_all();
                    }
                });
            // Without threads the reader writes every file itself.
            if let Ok(h) = spawned {
                workers.push(h);
            }
        }
        let pooled = !workers.is_empty();
        Files {
            buf: vec![0u8; 64 * 1024],
            umask,
            tx: pooled.then_some(tx),
            workers,
            progress,
            submitted: 0,
        }
    }

    fn check_failed(&self) -> Result<(), FsError> {
        match self
            .progress
            .0
            .lock()
            .ok()
            .and_then(|mut p| p.failed.take())
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes `data` to the new file `path` with permission bits `mode`,
    /// refusing more than `budget` bytes; returns its size and SHA-256 (hex).
    /// A small file may still be on its way to the disk when this returns:
    /// [`Self::finish`] waits for it.
    pub(super) fn write(
        &mut self,
        path: &Path,
        mode: u32,
        mtime: Option<u64>,
        declared: u64,
        data: &mut dyn Read,
        budget: u64,
    ) -> Result<(u64, String), WriteError> {
        self.check_failed().map_err(WriteError::Fs)?;
        let mut sha = Sha256::new();
        if declared <= POOLED_MAX && self.tx.is_some() {
            // Read it whole (hashing as it comes), then hand it over.
            let mut whole = Vec::with_capacity(declared as usize);
            loop {
                let k = match data.read(&mut self.buf) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(WriteError::Read(e)),
                };
                if (whole.len() + k) as u64 > budget.min(POOLED_MAX.max(declared)) {
                    if (whole.len() + k) as u64 > budget {
                        return Err(WriteError::Budget);
                    }
                    // Longer than it said: stream the rest instead.
                    return self.stream(
                        path,
                        mode,
                        mtime,
                        sha,
                        whole,
                        &self.buf[..k],
                        data,
                        budget,
                    );
                }
                sha.update(&self.buf[..k]);
                whole.extend_from_slice(&self.buf[..k]);
            }
            let n = whole.len() as u64;
            let job = Job {
                path: path.to_path_buf(),
                mode,
                mtime,
                data: whole,
            };
            if let Some(tx) = &self.tx
                && tx.send(job).is_ok()
            {
                self.submitted += 1;
                return Ok((n, hex::encode(sha.finalize())));
            }
            return Err(WriteError::Fs(FsError::new(
                "write",
                path,
                io::Error::other("the writer threads stopped"),
            )));
        }
        self.stream(path, mode, mtime, sha, Vec::new(), &[], data, budget)
    }

    /// Writes a file on this thread: `head` (already hashed), then `more`
    /// and the rest of `data`, as they stream.
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        path: &Path,
        mode: u32,
        mtime: Option<u64>,
        mut sha: Sha256,
        head: Vec<u8>,
        more: &[u8],
        data: &mut dyn Read,
        budget: u64,
    ) -> Result<(u64, String), WriteError> {
        let mut f = fs::create_new(path, mode).map_err(WriteError::Fs)?;
        let werr = |e: io::Error| WriteError::Fs(FsError::new("write", path, e));
        f.write_all(&head).map_err(werr)?;
        let mut n = head.len() as u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut first = Some(more);
        // Read and write errors mean different things: a failed read is
        // a corrupt or truncated archive (or a limit reached), a failed
        // write is this machine's disk.
        loop {
            let chunk: &[u8] = match first.take() {
                Some(m) if !m.is_empty() => m,
                _ => match data.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => &buf[..k],
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(WriteError::Read(e)),
                },
            };
            if n + chunk.len() as u64 > budget {
                return Err(WriteError::Budget);
            }
            sha.update(chunk);
            f.write_all(chunk).map_err(werr)?;
            n += chunk.len() as u64;
        }
        finish_file(&f, path, mode, self.umask, mtime).map_err(WriteError::Fs)?;
        Ok((n, hex::encode(sha.finalize())))
    }

    /// Waits until every file handed over so far is written (before a
    /// hard link to one of them, and at the end).
    pub(super) fn barrier(&mut self) -> Result<(), FsError> {
        let (lock, changed) = &*self.progress;
        if let Ok(mut p) = lock.lock() {
            while p.written < self.submitted && !self.workers.is_empty() {
                p = match changed.wait(p) {
                    Ok(p) => p,
                    Err(_) => break,
                };
            }
        }
        self.check_failed()
    }

    /// Waits for every file to be written and stops the writers.
    pub(super) fn finish(&mut self) -> Result<(), FsError> {
        let res = self.barrier();
        self.stop();
        res
    }

    fn stop(&mut self) {
        // Closing the queue ends each writer after its last job.
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Files {
    /// A refused archive's files are not waited for one by one, but the
    /// writers are joined: nothing may write into the staging folder once
    /// its removal begins.
    fn drop(&mut self) {
        self.stop();
    }
}
