//! Writing unpacked files. Creating a file costs far more kernel time than
//! writing a small one, and one thread creating them one by one leaves the
//! other cores idle: small files are handed, whole, to a few writer
//! threads, while the single reader goes on decompressing. The reader is
//! the one thread every byte passes through (inflate alone keeps it busy on
//! a `.tar.gz`), so a small file's SHA-256 is computed by the writer that
//! has the file, from the very bytes it writes, and collected at the end
//! ([`FileSum::Pending`]); sizes are counted on the reader side. Large files
//! are written and hashed by the reader itself, streaming, so memory stays
//! bounded: at most [`QUEUED_FILES`] files of at most [`POOLED_MAX`] bytes
//! wait in the queue.
//!
//! Each written file is then handed, still open, to one more thread that
//! asks the kernel to start writing it to disk ([`fs::start_writeback`]):
//! the disk works while the unpack goes on, and the `syncfs` that ends the
//! install finds little left to wait for. Doing that on the writers or the
//! reader instead slowed them down (submitting writeback costs CPU time).

use std::collections::HashMap;
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
/// Written files kept open for the flusher thread; when it falls behind,
/// files are closed without a head start (a service's default limit is
/// 1,024 open files).
const QUEUED_FLUSHES: usize = 64;

/// Why a file could not be written.
pub(super) enum WriteError {
    /// The archive stream failed (corrupt, truncated, or a limit tripped).
    Read(io::Error),
    /// The file grew past the byte budget it was given.
    Budget,
    /// This machine's disk failed.
    Fs(FsError),
}

/// A file's SHA-256 (hex), as [`Files::write`] gives it.
#[derive(Debug, Clone)]
pub(super) enum FileSum {
    /// Known now: the reader hashed the file as it streamed.
    Hex(String),
    /// Computed by a writer thread: the key to look up in what
    /// [`Files::finish`] returns.
    Pending(u64),
}

/// A file for a writer thread.
struct Job {
    /// Its key among the digests [`Files::finish`] returns.
    id: u64,
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
    /// The flusher thread's queue, and the thread.
    flush: Option<SyncSender<Flush>>,
    flusher: Option<JoinHandle<()>>,
    /// What the writers have done, and when it changes.
    progress: Arc<(Mutex<Progress>, Condvar)>,
    /// Files handed to the writers.
    submitted: u64,
}

/// The writers' side: files written, their digests, and the first failure.
#[derive(Default)]
struct Progress {
    written: u64,
    digests: HashMap<u64, String>,
    failed: Option<FsError>,
    /// The reader waits in [`Files::barrier`]: only then is a wake-up (a
    /// system call) worth making after each file.
    waiting: bool,
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
) -> Result<std::fs::File, FsError> {
    let mut f = fs::create_new(path, mode)?;
    f.write_all(data)
        .map_err(|e| FsError::new("write", path, e))?;
    finish_file(&f, path, mode, umask, mtime)?;
    Ok(f)
}

/// A file written and still open, for the flusher thread.
type Flush = (std::fs::File, PathBuf);

/// Hands a written file to the flusher, or closes it now when the flusher
/// is behind or gone.
fn offer(flush: Option<&SyncSender<Flush>>, f: std::fs::File, path: PathBuf) {
    if let Some(tx) = flush {
        let _ = tx.try_send((f, path));
    }
}

/// The flusher thread: starts writeback of each file it is given, then
/// closes it. A failure costs only the head start: the `syncfs` after the
/// unpack is what makes the files durable, and its errors are reported.
fn spawn_flusher() -> Option<(SyncSender<Flush>, JoinHandle<()>)> {
    let (tx, rx) = sync_channel::<Flush>(QUEUED_FLUSHES);
    let handle = std::thread::Builder::new()
        .name("switchyard-flush".into())
        .spawn(move || {
            for (f, path) in rx {
                if let Err(e) = fs::start_writeback(&f, &path) {
                    tracing::debug!(error = %e, "no early writeback");
                }
            }
        })
        .ok()?;
    Some((tx, handle))
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
        let (flush, flusher) = spawn_flusher().unzip();
        let mut workers = Vec::new();
        for i in 0..WRITERS {
            let rx = rx.clone();
            let progress = progress.clone();
            let flush = flush.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("switchyard-write-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let sum = hex::encode(Sha256::digest(&job.data));
                        let res = write_file(&job.path, job.mode, umask, job.mtime, &job.data)
                            .map(|f| offer(flush.as_ref(), f, job.path));
                        let (lock, changed) = &*progress;
                        let wake = match lock.lock() {
                            Ok(mut p) => {
                                p.written += 1;
                                p.digests.insert(job.id, sum);
                                if let Err(e) = res
                                    && p.failed.is_none()
                                {
                                    p.failed = Some(e);
                                }
                                p.waiting
                            }
                            Err(_) => true,
                        };
                        if wake {
                            changed.notify_all();
                        }
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
            flush,
            flusher,
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
    /// refusing more than `budget` bytes; returns its size and SHA-256.
    /// A small file may still be on its way to the disk, and its digest
    /// still to be computed, when this returns: [`Self::finish`] waits for
    /// both.
    pub(super) fn write(
        &mut self,
        path: &Path,
        mode: u32,
        mtime: Option<u64>,
        declared: u64,
        data: &mut dyn Read,
        budget: u64,
    ) -> Result<(u64, FileSum), WriteError> {
        self.check_failed().map_err(WriteError::Fs)?;
        if declared <= POOLED_MAX && self.tx.is_some() {
            // Read it whole, straight into its own buffer, then hand it over.
            let cap = budget.min(POOLED_MAX.max(declared));
            let mut whole = Vec::with_capacity(declared as usize);
            data.take(cap + 1)
                .read_to_end(&mut whole)
                .map_err(WriteError::Read)?;
            if whole.len() as u64 > cap {
                if whole.len() as u64 > budget {
                    return Err(WriteError::Budget);
                }
                // Longer than it said: hash what came, stream the rest.
                let mut sha = Sha256::new();
                sha.update(&whole);
                return self
                    .stream(path, mode, mtime, sha, whole, data, budget)
                    .map(|(n, hex)| (n, FileSum::Hex(hex)));
            }
            let n = whole.len() as u64;
            let id = self.submitted;
            let job = Job {
                id,
                path: path.to_path_buf(),
                mode,
                mtime,
                data: whole,
            };
            if let Some(tx) = &self.tx
                && tx.send(job).is_ok()
            {
                self.submitted += 1;
                return Ok((n, FileSum::Pending(id)));
            }
            return Err(WriteError::Fs(FsError::new(
                "write",
                path,
                io::Error::other("the writer threads stopped"),
            )));
        }
        self.stream(path, mode, mtime, Sha256::new(), Vec::new(), data, budget)
            .map(|(n, hex)| (n, FileSum::Hex(hex)))
    }

    /// Writes a file on this thread: `head` (already hashed), then the
    /// rest of `data`, as it streams.
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &mut self,
        path: &Path,
        mode: u32,
        mtime: Option<u64>,
        mut sha: Sha256,
        head: Vec<u8>,
        data: &mut dyn Read,
        budget: u64,
    ) -> Result<(u64, String), WriteError> {
        let mut f = fs::create_new(path, mode).map_err(WriteError::Fs)?;
        let werr = |e: io::Error| WriteError::Fs(FsError::new("write", path, e));
        f.write_all(&head).map_err(werr)?;
        let mut n = head.len() as u64;
        let buf = &mut self.buf;
        // Read and write errors mean different things: a failed read is
        // a corrupt or truncated archive (or a limit reached), a failed
        // write is this machine's disk.
        loop {
            let k = match data.read(buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WriteError::Read(e)),
            };
            let chunk = &buf[..k];
            if n + k as u64 > budget {
                return Err(WriteError::Budget);
            }
            sha.update(chunk);
            f.write_all(chunk).map_err(werr)?;
            n += k as u64;
        }
        finish_file(&f, path, mode, self.umask, mtime).map_err(WriteError::Fs)?;
        offer(self.flush.as_ref(), f, path.to_path_buf());
        Ok((n, hex::encode(sha.finalize())))
    }

    /// Waits until every file handed over so far is written (before a
    /// hard link to one of them, and at the end).
    pub(super) fn barrier(&mut self) -> Result<(), FsError> {
        let (lock, changed) = &*self.progress;
        if let Ok(mut p) = lock.lock() {
            loop {
                if p.written >= self.submitted || self.workers.is_empty() {
                    p.waiting = false;
                    break;
                }
                p.waiting = true;
                p = match changed.wait(p) {
                    Ok(p) => p,
                    Err(_) => break,
                };
            }
        }
        self.check_failed()
    }

    /// Waits for every file to be written, stops the writers, and returns
    /// the digests they computed, by [`FileSum::Pending`] key.
    pub(super) fn finish(&mut self) -> Result<HashMap<u64, String>, FsError> {
        let res = self.barrier();
        self.stop();
        res?;
        let digests = match self.progress.0.lock() {
            Ok(mut p) => std::mem::take(&mut p.digests),
            Err(_) => HashMap::new(),
        };
        Ok(digests)
    }

    fn stop(&mut self) {
        // Closing the queue ends each writer after its last job.
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        // The writers' copies of the flusher's queue are gone with them.
        self.flush = None;
        if let Some(h) = self.flusher.take() {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's open descriptors that name a file under `dir`.
    fn open_under(dir: &Path) -> usize {
        let fds = fs::list_dir(Path::new("/proc/self/fd")).unwrap();
        fds.iter()
            .filter_map(|fd| {
                fs::read_link(&Path::new("/proc/self/fd").join(fd))
                    .ok()
                    .flatten()
            })
            .filter(|target| target.starts_with(dir))
            .count()
    }

    /// More files than the flusher's queue holds, small (writer threads)
    /// and large (streamed here): each is whole, its digest is the one
    /// reported, and once the writers are finished no file is left open
    /// (the flusher closes what it is given, and drops nothing it owes).
    #[test]
    fn every_file_is_written_whole_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let mut files = Files::new();
        let mut expect = Vec::new();
        for i in 0..(QUEUED_FLUSHES * 3) {
            let len = if i % 50 == 7 {
                POOLED_MAX as usize + 1000
            } else {
                100 + i
            };
            let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let path = root.join(format!("f{i}"));
            let (n, sum) = files
                .write(
                    &path,
                    0o640,
                    Some(1_000_000),
                    len as u64,
                    &mut &data[..],
                    u64::MAX,
                )
                .ok()
                .expect("written");
            assert_eq!(n, len as u64);
            expect.push((path, hex::encode(Sha256::digest(&data)), sum, data));
        }
        let digests = files.finish().unwrap();
        assert_eq!(open_under(&root), 0, "files left open after finish");
        for (path, hex, sum, data) in expect {
            let got = match sum {
                FileSum::Hex(h) => h,
                FileSum::Pending(id) => digests[&id].clone(),
            };
            assert_eq!(got, hex, "{}", path.display());
            assert_eq!(fs::read(&path).unwrap(), data, "{}", path.display());
            let meta = fs::metadata(&path).unwrap().unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        }
    }
}
