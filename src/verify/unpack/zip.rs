//! ZIP packages. Their directory sits at the end, so a ZIP is read from a
//! file (the install writes the verified download to one first: two
//! passes), under the same rules as a tar stream: names, links, devices,
//! duplicates, modes and every limit, the compression ratio included.

use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use super::{
    ArchiveFormat, Counting, Incoming, Limited, Meter, StripHints, UnpackError, Unpacked, Unpacker,
    refuse,
};
use crate::config::UnpackLimits;
use crate::fs;

/// Longest symlink target read from a ZIP entry's data.
const MAX_LINK_BYTES: u64 = 4096;

/// Unpacks the ZIP file at `path` into `dest` (a new, empty directory).
/// Only stored and deflated entries are read; encrypted ones are refused.
pub(crate) fn unpack_zip(
    path: &Path,
    dest: &Path,
    limits: &UnpackLimits,
    hints: &StripHints,
) -> Result<Unpacked, UnpackError> {
    let meter = Rc::new(Meter::default());
    let file = fs::open(path)?;
    let mut u = Unpacker::new(dest, limits, hints, ArchiveFormat::Zip, meter.clone());
    let corrupt = |e: zip::result::ZipError, entry: Option<String>| UnpackError::Corrupt {
        format: "zip",
        entry,
        source: std::io::Error::other(e),
    };
    let mut archive = zip::ZipArchive::new(Counting {
        inner: std::io::BufReader::new(file),
        meter: meter.clone(),
    })
    .map_err(|e| corrupt(e, None))?;
    if archive.len() as u64 > limits.max_entries {
        return Err(UnpackError::Limit(format!(
            "it has more than max_entries = {} entries",
            limits.max_entries
        )));
    }
    // The crate keeps one entry per name: a name listed twice would
    // otherwise pass unseen.
    if archive.has_duplicate_names() {
        return Err(refuse(
            "(ZIP directory)",
            "duplicate entry: the directory lists a name twice",
        ));
    }
    for i in 0..archive.len() {
        let raw_name = archive
            .by_index_data(i)
            .map(|e| e.name_raw().to_vec())
            .unwrap_or_default();
        let raw = String::from_utf8_lossy(&raw_name).into_owned();
        let mut f = archive
            .by_index(i)
            .map_err(|e| corrupt(e, Some(raw.clone())))?;
        let unix = f.unix_mode();
        let kind = unix.map(|m| m & 0o170_000).unwrap_or(0);
        let mtime = f.last_modified().and_then(|t| {
            let d = jiff::civil::date(t.year() as i16, t.month() as i8, t.day() as i8).at(
                t.hour() as i8,
                t.minute() as i8,
                t.second() as i8,
                0,
            );
            // DOS times carry no zone; UTC is as good a guess as any.
            d.to_zoned(jiff::tz::TimeZone::UTC)
                .ok()
                .and_then(|z| u64::try_from(z.timestamp().as_second()).ok())
        });
        let declared = f.size();
        let is_dir = kind == 0o040_000 || (kind == 0 && f.is_dir());
        let limit = limits.max_bytes;
        let ratio = limits.max_compression_ratio;
        let mut data = Limited {
            inner: &mut f,
            meter: meter.clone(),
            limit,
            ratio,
        };
        match kind {
            _ if is_dir => u.add(&raw_name, unix.unwrap_or(0o755), Incoming::Dir)?,
            0o120_000 => {
                let mut target = Vec::new();
                (&mut data)
                    .take(MAX_LINK_BYTES + 1)
                    .read_to_end(&mut target)
                    .map_err(|e| u.stream_error(e, Some(raw.clone())))?;
                if target.len() as u64 > MAX_LINK_BYTES {
                    u.count()?;
                    return Err(refuse(&raw, "symlink target longer than 4096 bytes"));
                }
                let target = String::from_utf8(target)
                    .map_err(|_| refuse(&raw, "link target is not UTF-8"))?;
                u.add(&raw_name, 0o777, Incoming::Symlink(target))?
            }
            0 | 0o100_000 => u.add(
                &raw_name,
                unix.unwrap_or(0o644),
                Incoming::File {
                    declared,
                    data: &mut data,
                    mtime,
                },
            )?,
            0o020_000 | 0o060_000 => {
                u.count()?;
                return Err(refuse(&raw, "device files are not allowed"));
            }
            0o010_000 => {
                u.count()?;
                return Err(refuse(&raw, "FIFOs are not allowed"));
            }
            other => {
                u.count()?;
                return Err(refuse(
                    &raw,
                    format!("unsupported entry type (mode {other:o})"),
                ));
            }
        }
    }
    u.finish()
}
