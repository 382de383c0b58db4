//! Tar streams, compressed or not: one pass through the decompressor the
//! first bytes name, into the shared rules of [`super::Unpacker`].

use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use super::{
    ArchiveFormat, Counting, Incoming, Limited, Meter, StripHints, UnpackError, Unpacked, Unpacker,
    framing_allowance, refuse,
};
use crate::config::UnpackLimits;

/// Unpacks the tar stream `reader`, compressed as `format` says, into
/// `dest` (a new, empty directory). Reads the compressed stream to its end
/// (every gzip member, zstd frame, xz or bzip2 stream), so a corrupt tail
/// is noticed.
pub(crate) fn unpack_tar<R: Read>(
    format: ArchiveFormat,
    reader: R,
    dest: &Path,
    limits: &UnpackLimits,
    hints: &StripHints,
) -> Result<Unpacked, UnpackError> {
    let meter = Rc::new(Meter::default());
    let counted = Counting {
        inner: reader,
        meter: meter.clone(),
    };
    let corrupt = |e: io::Error| UnpackError::Corrupt {
        format: format.extension(),
        entry: None,
        source: e,
    };
    let decoded: Box<dyn Read + '_> = match format {
        ArchiveFormat::TarGz => Box::new(flate2::read::MultiGzDecoder::new(counted)),
        ArchiveFormat::TarZst => {
            Box::new(zstd::stream::read::Decoder::new(counted).map_err(corrupt)?)
        }
        ArchiveFormat::TarXz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(counted)),
        ArchiveFormat::TarBz2 => Box::new(bzip2::read::MultiBzDecoder::new(counted)),
        ArchiveFormat::Tar => Box::new(counted),
        ArchiveFormat::Zip => {
            return Err(corrupt(io::Error::other(
                "a ZIP package is read from a file, not as a stream",
            )));
        }
    };
    let limited = Limited {
        inner: decoded,
        meter: meter.clone(),
        limit: limits.max_bytes.saturating_add(framing_allowance(limits)),
        ratio: limits.max_compression_ratio,
    };
    let mut archive = tar::Archive::new(limited);
    let mut u = Unpacker::new(dest, limits, hints, format, meter);
    let entries = archive.entries().map_err(|e| u.stream_error(e, None))?;
    for entry in entries {
        let entry = entry.map_err(|e| u.stream_error(e, None))?;
        tar_entry(&mut u, entry)?;
    }
    // Consume the tar trailer and the compressed stream's end (its check)
    // within the limits.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| u.stream_error(e, None))?;
    u.finish()
}

fn tar_entry<R: Read>(
    u: &mut Unpacker<'_>,
    mut entry: tar::Entry<'_, R>,
) -> Result<(), UnpackError> {
    let raw_bytes = entry.path_bytes().into_owned();
    let raw = String::from_utf8_lossy(&raw_bytes).into_owned();
    let etype = entry.header().entry_type();
    if etype.is_pax_global_extensions() {
        return Ok(());
    }
    let mode = entry.header().mode().unwrap_or(0o644);
    if etype.is_dir() {
        return u.add(&raw_bytes, mode, Incoming::Dir);
    }
    if etype.is_file() || etype.is_contiguous() || etype.is_gnu_sparse() {
        let declared = entry.size();
        let mtime = entry.header().mtime().ok();
        return u.add(
            &raw_bytes,
            mode,
            Incoming::File {
                declared,
                data: &mut entry,
                mtime,
            },
        );
    }
    if etype.is_symlink() {
        let target = link_name(&entry, &raw)?;
        return u.add(&raw_bytes, mode, Incoming::Symlink(target));
    }
    if etype.is_hard_link() {
        let target = link_name(&entry, &raw)?;
        return u.add(&raw_bytes, mode, Incoming::Hardlink(target));
    }
    u.count()?;
    if etype.is_character_special() || etype.is_block_special() {
        return Err(refuse(&raw, "device files are not allowed"));
    }
    if etype.is_fifo() {
        return Err(refuse(&raw, "FIFOs are not allowed"));
    }
    Err(refuse(
        &raw,
        format!("unsupported entry type {:?}", etype.as_byte() as char),
    ))
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>, raw: &str) -> Result<String, UnpackError> {
    let bytes = entry
        .link_name_bytes()
        .ok_or_else(|| refuse(raw, "link without a target"))?;
    String::from_utf8(bytes.into_owned()).map_err(|_| refuse(raw, "link target is not UTF-8"))
}
