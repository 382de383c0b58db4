//! Properties over random input: archives with random names (`..`, `/`,
//! absolute paths, links, sizes) never cause a write outside the release
//! directory; the SHA256SUMS, minisign and config parsers never panic.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use proptest::prelude::*;
use switchyard::testing::UnpackLimits;

/// One random archive entry.
#[derive(Debug, Clone)]
enum E {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
}

fn name() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("..".to_string()),
        Just(".".to_string()),
        Just("".to_string()),
        Just("a".to_string()),
        Just("b".to_string()),
        Just("outside".to_string()),
        "[a-z]{1,3}",
    ];
    (any::<bool>(), prop::collection::vec(part, 1..5)).prop_map(|(abs, parts)| {
        let p = parts.join("/");
        if abs { format!("/{p}") } else { p }
    })
}

fn entry() -> impl Strategy<Value = E> {
    prop_oneof![
        (name(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(n, d)| E::File(n, d)),
        name().prop_map(E::Dir),
        (name(), name()).prop_map(|(n, t)| E::Symlink(n, t)),
        (name(), name()).prop_map(|(n, t)| E::Hardlink(n, t)),
    ]
}

fn build(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (n, data, link): (&str, &[u8], Option<&str>) = match e {
            E::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                (n, d, None)
            }
            E::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                (n, &[], None)
            }
            E::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                (n, &[], Some(t))
            }
            E::Hardlink(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                (n, &[], Some(t))
            }
        };
        let g = h.as_gnu_mut().unwrap();
        g.name = [0; 100];
        let nb = &n.as_bytes()[..n.len().min(99)];
        g.name[..nb.len()].copy_from_slice(nb);
        if let Some(t) = link {
            g.linkname = [0; 100];
            let tb = &t.as_bytes()[..t.len().min(99)];
            g.linkname[..tb.len()].copy_from_slice(tb);
        }
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Every path under `dir`, resolved: nothing may resolve outside `base`.
fn all_inside(dir: &Path, base: &Path) -> Result<(), String> {
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let p = e.map_err(|e| e.to_string())?.path();
        let m = std::fs::symlink_metadata(&p).map_err(|e| e.to_string())?;
        if m.file_type().is_symlink() {
            // A dangling link is fine; one that resolves must stay inside.
            if let Ok(real) = std::fs::canonicalize(&p)
                && !real.starts_with(base)
            {
                return Err(format!("{} resolves to {}", p.display(), real.display()));
            }
        } else if m.is_dir() {
            all_inside(&p, base)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_archives_never_write_outside(entries in prop::collection::vec(entry(), 1..12)) {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().canonicalize().unwrap();
        let outside = base.join("outside");
        std::fs::create_dir(&outside).unwrap();
        let dest = base.join("box/dest");
        std::fs::create_dir_all(&dest).unwrap();
        let targz = build(&entries);
        let limits = UnpackLimits { max_bytes: 1 << 20, max_entries: 100, strip_top_dir: Some(true), ..UnpackLimits::default() };
        let res = switchyard::testing::unpack_tar_gz(&targz[..], &dest, &limits);
        // Whatever happened, nothing appeared beside the destination...
        prop_assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        let siblings: Vec<_> = std::fs::read_dir(base.join("box")).unwrap().map(|e| e.unwrap().file_name()).collect();
        prop_assert_eq!(siblings, vec![std::ffi::OsString::from("dest")]);
        // ...and an accepted tree resolves entirely inside itself.
        if let Ok(u) = res {
            let root = u.content_root.canonicalize().unwrap();
            prop_assert!(all_inside(&root, &root).is_ok(), "{:?}", all_inside(&root, &root));
        }
    }

    #[test]
    fn sums_parser_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&data);
        let _ = switchyard::testing::Sha256Sums::parse(&text, "SHA256SUMS");
    }

    #[test]
    fn sums_parser_never_panics_on_near_misses(name in "[ -~]{0,40}", hexs in "[0-9a-fA-Fx]{60,68}", sep in prop_oneof![Just("  "), Just(" *"), Just(" "), Just("\t")]) {
        let _ = switchyard::testing::Sha256Sums::parse(&format!("{hexs}{sep}{name}\n"), "S");
        let _ = switchyard::testing::Sha256Sums::parse(&format!("SHA256 ({name}) = {hexs}\n"), "S");
        let _ = switchyard::testing::Sha256Sums::parse(&format!("\\{hexs}{sep}{name}\n"), "S");
    }

    #[test]
    fn minisign_parser_never_panics(data in prop::collection::vec(any::<u8>(), 0..400), lines in prop::collection::vec("[ -~]{0,120}", 0..6)) {
        let policy = switchyard::testing::TrustPolicy::new(
        "web",
            &["RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3".to_string()],
            &[], &[], true, true,
        ).unwrap();
        let _ = switchyard::testing::begin(&policy, &data, "x.minisig");
        let text = lines.join("\n");
        let _ = switchyard::testing::verify_bytes(&policy, text.as_bytes(), b"payload", "x.minisig");
        let structured = format!("untrusted comment: x\nRWQ{}\ntrusted comment: {}\n{}\n", lines.first().cloned().unwrap_or_default(), lines.get(1).cloned().unwrap_or_default(), lines.get(2).cloned().unwrap_or_default());
        let _ = switchyard::testing::begin(&policy, structured.as_bytes(), "x.minisig");
    }

    #[test]
    fn config_parser_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&data);
        let _ = switchyard::testing::Config::parse(&text, Path::new("fuzz.toml"));
    }

    #[test]
    fn config_parser_never_panics_on_plausible_toml(
        root in "[ -~]{0,20}", keep in any::<i64>(), extra in prop::collection::vec(("[a-z_]{1,16}", "[ -~]{0,20}"), 0..6),
    ) {
        let mut text = format!("[apps.web]\nroot = {root:?}\nkeep_releases = {keep}\nsource.dir = \"/d\"\ntrust.require_signature = false\n");
        for (k, v) in extra {
            text.push_str(&format!("{k} = {v:?}\n"));
        }
        let _ = switchyard::testing::Config::parse(&text, Path::new("fuzz.toml"));
    }
}
