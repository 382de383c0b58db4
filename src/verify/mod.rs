//! Integrity checks that run while the asset streams: SHA-256 against a
//! `SHA256SUMS` manifest. Nothing here holds an artifact in memory.

pub(crate) mod critical;
mod format;
pub(crate) mod rollout;
pub(crate) mod signing;
pub(crate) mod trust;
pub(crate) mod unpack;

use std::collections::BTreeMap;
use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// Verification failures.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A line of a checksum manifest could not be parsed.
    #[error(
        "{file} line {line}: not a sha256sum line (expected '<64 hex digits>  <name>' or 'SHA256 (<name>) = <hex>'): {text:?}"
    )]
    BadManifestLine {
        /// The manifest's name.
        file: String,
        /// 1-based line.
        line: usize,
        /// The offending text (truncated).
        text: String,
    },
    /// The same name twice with different sums.
    #[error("{file} lists {name} twice with different checksums")]
    ConflictingEntry {
        /// The manifest's name.
        file: String,
        /// The name listed twice.
        name: String,
    },
    /// The asset is not in the manifest.
    #[error(
        "{file} has no line for {name}; the release must publish a checksum for every asset (regenerate it with `sha256sum {name} > {file}`)"
    )]
    NotListed {
        /// The manifest's name.
        file: String,
        /// The asset's name.
        name: String,
    },
    /// The computed digest differs.
    #[error(
        "checksum mismatch for {name}: {file} says {expected}, the downloaded bytes hash to {actual}; the asset is corrupt or was tampered with, nothing was installed"
    )]
    Mismatch {
        /// The asset's name.
        name: String,
        /// Where the expected value came from.
        file: String,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
}

/// A parsed `SHA256SUMS` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sha256Sums {
    entries: BTreeMap<String, [u8; 32]>,
}

impl Sha256Sums {
    /// Parses the GNU (`sha256sum`) and BSD (`sha256sum --tag`) formats.
    /// `file` names the manifest in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, VerifyError> {
        let mut entries = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let bad = || VerifyError::BadManifestLine {
                file: file.to_string(),
                line: i + 1,
                text: line.chars().take(120).collect(),
            };
            let (name, hex_sum) = parse_line(line).ok_or_else(bad)?;
            let mut sum = [0u8; 32];
            hex::decode_to_slice(hex_sum, &mut sum).map_err(|_| bad())?;
            if let Some(prev) = entries.insert(name.clone(), sum)
                && prev != sum
            {
                return Err(VerifyError::ConflictingEntry {
                    file: file.to_string(),
                    name,
                });
            }
        }
        Ok(Sha256Sums { entries })
    }

    /// As [`Self::parse`], and also a file holding only a digest (as
    /// `<asset>.sha256` often does), taken as the digest of `asset`.
    pub fn parse_for(text: &str, file: &str, asset: &str) -> Result<Self, VerifyError> {
        let t = text.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut sum = [0u8; 32];
            hex::decode_to_slice(t, &mut sum).map_err(|_| VerifyError::BadManifestLine {
                file: file.to_string(),
                line: 1,
                text: t.to_string(),
            })?;
            let mut s = Sha256Sums::default();
            s.insert(asset, sum);
            return Ok(s);
        }
        Self::parse(text, file)
    }

    /// The expected digest of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8; 32]> {
        self.entries.get(name)
    }

    /// The expected digest of `name`, or a `NotListed` error.
    pub fn expect(&self, name: &str, file: &str) -> Result<[u8; 32], VerifyError> {
        self.get(name)
            .copied()
            .ok_or_else(|| VerifyError::NotListed {
                file: file.to_string(),
                name: name.to_string(),
            })
    }

    /// Every listed name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }

    /// Renders in the GNU format, sorted by name.
    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|(n, s)| format!("{}  {}\n", hex::encode(s), n))
            .collect()
    }

    /// Adds or replaces one entry.
    pub fn insert(&mut self, name: impl Into<String>, sum: [u8; 32]) {
        self.entries.insert(name.into(), sum);
    }
}

fn parse_line(line: &str) -> Option<(String, &str)> {
    if let Some(rest) = line.strip_prefix("SHA256 (") {
        let (name, hex_sum) = rest.rsplit_once(") = ")?;
        if hex_sum.len() != 64 || name.is_empty() {
            return None;
        }
        return Some((name.to_string(), hex_sum));
    }
    // GNU: an optional leading backslash says the name is escaped.
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(l) => (true, l),
        None => (false, line),
    };
    if line.len() < 66 || !line.is_char_boundary(64) {
        return None;
    }
    let (hex_sum, rest) = line.split_at(64);
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))?;
    if name.is_empty() {
        return None;
    }
    let name = if escaped {
        unescape(name)?
    } else {
        name.to_string()
    };
    Some((name, hex_sum))
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Something that watches the asset's bytes as they stream past.
pub(crate) trait StreamCheck: Send {
    /// Sees the next chunk.
    fn update(&mut self, chunk: &[u8]);
}

impl StreamCheck for Sha256 {
    fn update(&mut self, chunk: &[u8]) {
        Digest::update(self, chunk);
    }
}

/// A reader that feeds every byte it passes through to a SHA-256 and to any
/// other stream checks (signatures), and counts them.
pub(crate) struct HashingReader<R> {
    inner: R,
    sha: Sha256,
    extra: Vec<Box<dyn StreamCheck>>,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            sha: Sha256::new(),
            extra: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds another check fed with the same bytes.
    pub(crate) fn with_check(mut self, c: Box<dyn StreamCheck>) -> Self {
        self.extra.push(c);
        self
    }

    /// The SHA-256 of everything read and the other checks, for finishing.
    pub(crate) fn finish(self) -> ([u8; 32], Vec<Box<dyn StreamCheck>>, u64) {
        (self.sha.finalize().into(), self.extra, self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = &buf[..n];
        Digest::update(&mut self.sha, chunk);
        for c in &mut self.extra {
            c.update(chunk);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The reading end of [`hash_on_thread`]: chunks hashed on another thread.
pub(crate) struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                // The hashing thread ended: end of stream (its error, if
                // any, is reported by `Hashing::finish`).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The hashing thread of [`hash_on_thread`].
pub(crate) struct Hashing<R> {
    handle: std::thread::JoinHandle<(io::Result<u64>, HashingReader<R>)>,
}

type Finished = (io::Result<u64>, [u8; 32], Vec<Box<dyn StreamCheck>>, u64);

impl<R> Hashing<R> {
    /// Waits for the whole stream to be read; returns how reading ended,
    /// the SHA-256 of everything, the other checks, and the byte count.
    pub(crate) fn finish(self) -> Finished
    where
        R: Read,
    {
        match self.handle.join() {
            Ok((res, r)) => {
                let (d, c, n) = r.finish();
                (res, d, c, n)
            }
            Err(_) => (
                Err(io::Error::other("the hashing thread panicked")),
                [0; 32],
                Vec::new(),
                0,
            ),
        }
    }
}

/// Reads `reader` to its end on a new thread (hashing and checking every
/// byte as it goes) and hands the bytes to the returned reader through a
/// small bounded channel, so hashing and decompression overlap on two cores
/// and at most a few chunks are ever held in memory. If the consumer stops
/// early, the thread keeps reading (and hashing) to the end: the digest must
/// cover the whole asset.
pub(crate) fn hash_on_thread<R: Read + Send + 'static>(
    mut reader: HashingReader<R>,
) -> (ChunkReader, Hashing<R>) {
    const CHUNK: usize = 128 * 1024;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let handle = std::thread::Builder::new()
        .name("switchyard-hash".into())
        .spawn(move || {
            let mut total = 0u64;
            let mut consumer = true;
            let res = loop {
                let mut buf = vec![0u8; CHUNK];
                match reader.read(&mut buf) {
                    Ok(0) => break Ok(total),
                    Ok(n) => {
                        total += n as u64;
                        buf.truncate(n);
                        if consumer && tx.send(buf).is_err() {
                            consumer = false;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            drop(tx);
            (res, reader)
        })
        .expect("spawn the hashing thread");
    (
        ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        },
        Hashing { handle },
    )
}

/// A writer that hashes (SHA-256) and counts what passes through it, for
/// archives written once and checksummed (pack, backups).
pub(crate) struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
    n: u64,
}

impl<W: io::Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sha: Sha256::new(),
            n: 0,
        }
    }

    /// The inner writer, the SHA-256 and the byte count.
    pub(crate) fn finish(self) -> (W, [u8; 32], u64) {
        (self.inner, self.sha.finalize().into(), self.n)
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        Digest::update(&mut self.sha, &buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// SHA-256 of a file's contents, streamed.
pub(crate) fn sha256_file(path: &std::path::Path) -> Result<[u8; 32], crate::fs::FsError> {
    let mut f = crate::fs::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(|e| crate::fs::FsError::new("read", path, e))?;
    Ok(h.finalize().into())
}

/// SHA-256 of a byte slice, hex-encoded.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Compares a computed digest with the expected one.
pub(crate) fn check_digest(
    name: &str,
    file: &str,
    expected: &[u8; 32],
    actual: &[u8; 32],
) -> Result<(), VerifyError> {
    if expected != actual {
        return Err(VerifyError::Mismatch {
            name: name.to_string(),
            file: file.to_string(),
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_gnu_binary_and_bsd_forms() {
        let text = format!("{H}  a.tar.gz\n{H} *b.tar.gz\nSHA256 (c.tar.gz) = {H}\n\n");
        let s = Sha256Sums::parse(&text, "SHA256SUMS").unwrap();
        assert_eq!(
            s.names().collect::<Vec<_>>(),
            ["a.tar.gz", "b.tar.gz", "c.tar.gz"]
        );
    }

    #[test]
    fn escaped_names_are_unescaped() {
        let s = Sha256Sums::parse(&format!("\\{H}  a\\\\b\n"), "S").unwrap();
        assert!(s.get("a\\b").is_some());
    }

    #[test]
    fn bad_lines_are_located() {
        let e = Sha256Sums::parse(&format!("{H}  ok\nnot a line\n"), "SUMS").unwrap_err();
        assert!(
            matches!(e, VerifyError::BadManifestLine { line: 2, .. }),
            "{e}"
        );
        let short = &H[..63];
        assert!(Sha256Sums::parse(&format!("{short}  x\n"), "S").is_err());
        assert!(Sha256Sums::parse(&format!("{H} x\n"), "S").is_err());
    }

    #[test]
    fn conflicting_duplicates_are_refused() {
        let other = "0".repeat(64);
        let e = Sha256Sums::parse(&format!("{H}  a\n{other}  a\n"), "S").unwrap_err();
        assert!(matches!(e, VerifyError::ConflictingEntry { .. }));
    }

    #[test]
    fn hashing_reader_digests_what_passes() {
        let mut r = HashingReader::new(&b"hello"[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        let (d, _, n) = r.finish();
        assert_eq!(n, 5);
        assert_eq!(hex::encode(d), sha256_hex(b"hello"));
    }
}
