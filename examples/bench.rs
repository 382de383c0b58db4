//! Benchmark, side by side with the shell baselines:
//!
//!   cargo run --release --example bench [-- SIZE_MIB]
//!
//! 1. `switchyard install` of a ~256 MiB release (many small files, some
//!    large ones) against `sha256sum -c SHA256SUMS && tar -xzf` on the same
//!    artifact: wall time and peak memory.
//! 2. A second release with 5% of the files changed, installed with
//!    `dedup = "hardlink"`: the extra disk it uses against a full copy.
//! 3. `switchyard revert` against `ln -sfn X tmp && mv -T tmp current`.
//! 4. Formats on releases of many small files: `.tar.gz` and `.tar.zst`
//!    installs of a ~2,000-file and a ~12,000-file release against
//!    `sha256sum -c && tar -xzf` and `sha256sum -c && tar --zstd -xf`:
//!    medians of `SWITCHYARD_BENCH_RUNS` (default 5; three times as many
//!    for the small release) runs of each side,
//!    taken in turn, each after a `sync` with the archive in the page
//!    cache; also, for information, the shell followed by `sync -f`. Run
//!    as root, each run starts from a dropped page cache (see
//!    [`fresh_caches`]).
//!
//! Section 4 needs the machine to itself: another program's disk writes
//! or memory use show up in both sides' figures, unevenly; and about 12 GiB
//! free in the temporary directory (its outputs are kept until the end).
//!
//! Targets: install no slower than the baseline (one pass instead of two),
//! peak memory under 64 MiB, the second release under 10% of a full copy,
//! revert within 3x the two-command shell swap. Uses the release binary next
//! to this example (build it first: `cargo build --release`).
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the copy of this benchmark that runs one measured command.
const MEASURE_ENV: &str = "SWITCHYARD_BENCH_MEASURE";

/// Runs a command to completion; wall time and peak RSS (KiB) of it and the
/// children it waited for. The command runs under a copy of this benchmark
/// (see [`measure_child`]), whose `RUSAGE_CHILDREN` then covers that command
/// alone.
fn measured(cmd: &mut Command) -> (Duration, u64) {
    let mut wrap = Command::new(std::env::current_exe().unwrap());
    wrap.env(MEASURE_ENV, "1")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrap.env(k, v),
            None => wrap.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        wrap.current_dir(d);
    }
    let start = Instant::now();
    let out = wrap.output().expect("spawn");
    let wall = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rss = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("maxrss "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the measuring copy prints maxrss");
    (wall, rss)
}

/// The measuring copy: runs its arguments as a command, waits for it, and
/// prints the peak RSS of the children it waited for.
fn measure_child() -> ! {
    let mut args = std::env::args_os().skip(1);
    let program = args.next().expect("a program");
    let status = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("spawn");
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    println!("maxrss {}", ru.max_rss());
    std::process::exit(status.code().unwrap_or(1));
}

/// Deterministic pseudo-random bytes (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "function", "return", "const", "import", "export", "class", "render", "props", "state",
    "value", "index", "module", "default", "string", "number", "await", "async", "error",
];

/// A release tree of about `mib` MiB: 3/4 in 16 KiB-ish text files (code,
/// templates), 1/4 in a few 8 MiB mostly incompressible blobs (images, fonts).
fn build_tree(dir: &Path, mib: u64, seed: u64, change_pct: u64) -> u64 {
    let mut rng = Rng(0x2545F4914F6CDD1D);
    let mut changed = Rng(seed);
    let total = mib << 20;
    let text_bytes = total * 3 / 4;
    let mut written = 0u64;
    let mut n = 0u64;
    let mut files = 0u64;
    while written < text_bytes {
        let size = 4096 + (rng.next() % 24576) as usize;
        let mut s = String::with_capacity(size);
        while s.len() < size {
            s.push_str(WORDS[(rng.next() % WORDS.len() as u64) as usize]);
            s.push(if rng.next().is_multiple_of(9) {
                '\n'
            } else {
                ' '
            });
        }
        if changed.next() % 100 < change_pct {
            s.push_str(&format!("\n// changed in {seed}\n"));
        }
        let p = dir.join(format!("src/m{}/f{n}.js", n % 97));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &s).unwrap();
        written += s.len() as u64;
        n += 1;
        files += 1;
    }
    let mut i = 0;
    while written < total {
        let mut buf = vec![0u8; 8 << 20];
        rng.fill(&mut buf);
        if changed.next() % 100 < change_pct {
            buf[0] ^= 0xff;
        }
        let p = dir.join(format!("public/assets/blob{i}.bin"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &buf).unwrap();
        written += buf.len() as u64;
        i += 1;
        files += 1;
    }
    std::fs::write(dir.join("VERSION"), format!("{seed}\n")).unwrap();
    files
}

fn du(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sk").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Flushes every dirty page to disk, so no run pays for the writeback of
/// the step before it (a shell baseline read 2.89 s once and 4.68 s
/// another time for that reason alone).
fn sync_disks() {
    let st = Command::new("sync").status().expect("run sync");
    assert!(st.success(), "sync failed");
}

/// Before a run of section 4: writes back everything dirty, then, when
/// this process may (root), drops the page cache and reads back what the
/// run needs: the archive, and the programs both sides run with their
/// libraries. Without that, this VM drifted: as outputs filled memory with
/// cached pages, every new page cost a reclaim, and on ext4 without a
/// journal the inodes freed by the last deletes (kept "recent" for 60 to
/// 360 s while their inode table block is cached) made each file creation
/// scan past them: one small release's install took 0.5 s instead of
/// 0.13 s. Returns whether the cache was dropped.
fn fresh_caches(files: &[PathBuf]) -> bool {
    sync_disks();
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    for f in files {
        if let Ok(mut r) = std::fs::File::open(f) {
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        }
    }
    dropped
}

/// The programs a section 4 run executes, and their shared libraries.
fn program_files(bin: &Path) -> Vec<PathBuf> {
    let mut files = vec![bin.to_path_buf()];
    for prog in ["sh", "tar", "zstd", "gzip", "sha256sum", "sync"] {
        let Ok(out) = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {prog}"))
            .output()
        else {
            continue;
        };
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !path.is_empty() {
            files.push(PathBuf::from(path));
        }
    }
    let mut libs = Vec::new();
    for f in &files {
        if let Ok(out) = Command::new("ldd").arg(f).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
                // "/lib64/ld-linux-x86-64.so.2 (0x...)"
                let path = line
                    .split("=>")
                    .last()
                    .and_then(|r| r.split_whitespace().next())
                    .filter(|p| p.starts_with('/'));
                if let Some(p) = path {
                    libs.push(PathBuf::from(p));
                }
            }
        }
    }
    files.extend(libs);
    files
}

/// Runs of each side in section 4 (`SWITCHYARD_BENCH_RUNS`, default 5).
fn runs() -> usize {
    std::env::var("SWITCHYARD_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(5)
}

/// Wall times and peak memory of one side over several runs.
#[derive(Default)]
struct Series {
    walls: Vec<Duration>,
    peak_kib: u64,
}

impl Series {
    fn push(&mut self, (wall, rss): (Duration, u64)) {
        self.walls.push(wall);
        self.peak_kib = self.peak_kib.max(rss);
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.walls.iter().map(|d| d.as_secs_f64()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
    /// The median wall time, in seconds.
    fn median(&self) -> f64 {
        let v = self.sorted();
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    /// `min-max` of the wall times, in seconds.
    fn spread(&self) -> String {
        let v = self.sorted();
        format!("{:.2}-{:.2}", v[0], v[v.len() - 1])
    }
    /// Every run in the order it ran.
    fn runs(&self) -> String {
        self.walls
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn main() {
    if std::env::var_os(MEASURE_ENV).is_some() {
        measure_child();
    }
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let exe = std::env::current_exe().unwrap();
    let bin: PathBuf = exe.parent().unwrap().parent().unwrap().join("switchyard");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release ({})",
        bin.display()
    );
    let tmp = tempfile::Builder::new()
        .prefix("switchyard-bench-")
        .tempdir()
        .unwrap();
    let base = tmp.path();
    let drop_dir = base.join("drop");
    let root = base.join("root");
    println!(
        "switchyard benchmark: {mib} MiB release, binary {}",
        bin.display()
    );

    let keys = base.join("keys");
    let (pk, sk, _) = switchyard::testing::keygen(&keys, None).unwrap();
    let public = std::fs::read_to_string(&pk)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let signing = switchyard::testing::Signing {
        key: sk,
        password: None,
        repo: None,
    };
    let mut trees = Vec::new();
    for (v, seed, pct) in [("1.0.0", 1, 0), ("1.0.1", 2, 5)] {
        let src = base.join(format!("build-{v}"));
        let files = build_tree(&src, mib, seed, pct);
        let p = switchyard::testing::pack_signed(
            &src,
            &format!("v{v}"),
            &drop_dir,
            Some("app-{version}.tar.gz"),
            Some(&signing),
        )
        .unwrap();
        println!(
            "  release {v}: {files} files, {} MiB unpacked, {:.1} MiB archive",
            du(&src) >> 20,
            std::fs::metadata(&p.asset).unwrap().len() as f64 / 1048576.0
        );
        trees.push((v, src, p));
    }
    let cfg = base.join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[apps.app]\nroot = \"{}\"\ndedup = \"hardlink\"\n[apps.app.source]\ndir = \"{}\"\n[apps.app.trust]\nkeys = [\"{public}\"]\n",
            root.display(),
            drop_dir.display()
        ),
    )
    .unwrap();
    let sy = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.arg("--config")
            .arg(&cfg)
            .args(args)
            .env("SWITCHYARD_NO_AGENT", "1");
        c
    };
    // Every measured run starts the same way: nothing dirty left to write
    // back (`sync`), and the archive in the page cache (read once, so both
    // sides start warm). Caches stay warm rather than dropped: dropping
    // them would also evict the binaries, tar, sha256sum and the
    // directories, and make the runs measure this VM's disk reads.
    // (Streamed, not read into memory: a forked child's peak RSS would
    // include whatever this process holds.)
    let warm = |p: &Path| {
        sync_disks();
        let mut f = std::fs::File::open(p).unwrap();
        let _ = std::io::copy(&mut f, &mut std::io::sink());
    };

    // 1. install vs sha256sum -c && tar -xzf
    let (_, _, p1) = &trees[0];
    warm(&p1.asset);
    let out = base.join("baseline");
    std::fs::create_dir_all(&out).unwrap();
    let (base_wall, base_rss) = measured(Command::new("sh").arg("-c").arg(format!(
        "cd {} && sha256sum -c SHA256SUMS >/dev/null && tar -xzf {} -C {}",
        p1.dir.display(),
        p1.asset.display(),
        out.display()
    )));
    warm(&p1.asset);
    let (sy_wall, sy_rss) = measured(&mut sy(&["install", "app", "1.0.0"]));
    let full = du(&root.join("releases/1.0.0"));
    println!("\n1. install {mib} MiB");
    println!(
        "   sha256sum -c && tar -xzf : {:>8.2} s  {:>7.1} MiB peak",
        base_wall.as_secs_f64(),
        base_rss as f64 / 1024.0
    );
    println!(
        "   switchyard install        : {:>8.2} s  {:>7.1} MiB peak  (also: signature, per-file SHA-256 manifest, fsync)",
        sy_wall.as_secs_f64(),
        sy_rss as f64 / 1024.0
    );
    println!(
        "   ratio (switchyard/baseline): {:.2}x time",
        sy_wall.as_secs_f64() / base_wall.as_secs_f64()
    );
    let (_, ps) = measured(&mut sy(&["promote", "app", "1.0.0"]));
    let _ = ps;

    // 2. second release with 5% changed, dedup = hardlink
    let (_, _, p2) = &trees[1];
    warm(&p2.asset);
    let (d_wall, d_rss) = measured(&mut sy(&["install", "app", "1.0.1"]));
    let list = Command::new(&bin)
        .arg("--config")
        .arg(&cfg)
        .args(["list", "app", "--json"])
        .env("SWITCHYARD_NO_AGENT", "1")
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let unique = rows[0]["disk"]["unique_bytes"].as_u64().unwrap_or(0);
    println!("\n2. second release, 5% of files changed, dedup = \"hardlink\"");
    println!(
        "   install: {:.2} s, {:.1} MiB peak; extra disk {:.1} MiB of a {:.1} MiB full copy = {:.1}%",
        d_wall.as_secs_f64(),
        d_rss as f64 / 1024.0,
        unique as f64 / 1048576.0,
        full as f64 / 1048576.0,
        100.0 * unique as f64 / full.max(1) as f64
    );
    let _ = measured(&mut sy(&["promote", "app", "1.0.1"]));

    // 3. revert vs ln -sfn && mv -T (median of 21 each)
    let mut ours = Vec::new();
    let mut shell = Vec::new();
    let shell_root = base.join("shellroot");
    std::fs::create_dir_all(shell_root.join("releases/a")).unwrap();
    std::fs::create_dir_all(shell_root.join("releases/b")).unwrap();
    for i in 0..21 {
        // Revert walks back through the live history: go forward again
        // (not measured) so every measured revert has somewhere to go.
        if i > 0 {
            let _ = measured(&mut sy(&["promote", "app", "1.0.1"]));
        }
        ours.push(measured(&mut sy(&["revert", "app"])).0);
        let target = if i % 2 == 0 {
            "releases/a"
        } else {
            "releases/b"
        };
        shell.push(
            measured(Command::new("sh").arg("-c").arg(format!(
                "cd {} && ln -sfn {target} tmp && mv -T tmp current",
                shell_root.display()
            )))
            .0,
        );
    }
    ours.sort();
    shell.sort();
    let (o, s) = (ours[10], shell[10]);
    println!("\n3. revert (median of 21)");
    println!(
        "   ln -sfn X tmp && mv -T tmp current: {:>7.2} ms",
        s.as_secs_f64() * 1000.0
    );
    println!(
        "   switchyard revert                 : {:>7.2} ms  (lock, journal, fsyncs, audit line)",
        o.as_secs_f64() * 1000.0
    );
    println!("   ratio: {:.2}x", o.as_secs_f64() / s.as_secs_f64());

    // 4. formats: tar.gz and tar.zst, a small and a large release. Each
    // side runs several times, alternating which goes first, each run after
    // a sync and with the archive warm; the medians are compared.
    let n_runs = runs();
    println!(
        "\n4. formats, many small files (median of {n_runs} runs each, {} for the small release, alternating; min-max in brackets)",
        3 * n_runs
    );
    println!(
        "   the goal compares with the shell as issue #14 names it; 'shell+sync' (the same, then `sync -f` on its output) is extra information: install is durable, tar is not"
    );
    let small = base.join("build-small");
    let small_files = build_tree(&small, (mib / 6).max(8), 3, 0);
    let big_files = build_tree(&base.join("build-big"), mib, 1, 0);
    let mut worst: f64 = 0.0;
    let mut worst_rss: u64 = 0;
    let programs = program_files(&bin);
    let mut dropped_caches = true;
    for (label, src, files) in [
        ("small", small.clone(), small_files),
        ("large", base.join("build-big"), big_files),
    ] {
        for (fmt, untar) in [
            (switchyard::testing::PackFormat::TarGz, "tar -xzf"),
            (switchyard::testing::PackFormat::TarZst, "tar --zstd -xf"),
        ] {
            let tag = format!("{fmt:?}-{label}").to_lowercase();
            let fdrop = base.join(format!("drop-{tag}"));
            let p = switchyard::testing::pack_as(&src, "v2.0.0", &fdrop, None, Some(&signing), fmt)
                .unwrap();
            let froot = base.join(format!("root-{tag}"));
            let fcfg = base.join(format!("cfg-{tag}.toml"));
            std::fs::write(
                &fcfg,
                format!(
                    "[apps.app]\nroot = \"{}\"\n[apps.app.source]\ndir = \"{}\"\n[apps.app.trust]\nkeys = [\"{public}\"]\n",
                    froot.display(),
                    fdrop.display()
                ),
            )
            .unwrap();
            let out = base.join(format!("shell-{tag}"));
            let shell_cmd = |then_sync: bool| {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!(
                    "cd {} && sha256sum -c SHA256SUMS >/dev/null && {untar} {} -C {}{}",
                    p.dir.display(),
                    p.asset.display(),
                    out.display(),
                    if then_sync {
                        format!(" && sync -f {}", out.display())
                    } else {
                        String::new()
                    }
                ));
                c
            };
            let (mut shell, mut shell_sync, mut ours) =
                (Series::default(), Series::default(), Series::default());
            // Outputs are moved aside, never deleted, until the benchmark
            // ends (about 10 GiB at the default size): ext4 without a journal
            // skips recently freed inodes when it allocates, for minutes (see
            // `fresh_caches`), so every run after a large delete paid for it.
            let trash = base.join(format!("trash-{tag}"));
            std::fs::create_dir_all(&trash).unwrap();
            let mut moved = 0;
            let mut set_aside = |p: &Path| {
                if p.exists() {
                    moved += 1;
                    std::fs::rename(p, trash.join(moved.to_string())).unwrap();
                }
            };
            let mut run_files = programs.clone();
            run_files.push(p.asset.clone());
            // A small release's runs last a tenth of a second, where one
            // stray disk read shows: three times as many of them.
            let case_runs = if label == "small" { 3 * n_runs } else { n_runs };
            for i in 0..case_runs {
                for side in 0..3 {
                    // Rotate the order, so no side always runs first.
                    match (side + i) % 3 {
                        0 | 1 => {
                            let then_sync = (side + i) % 3 == 1;
                            set_aside(&out);
                            std::fs::create_dir_all(&out).unwrap();
                            dropped_caches &= fresh_caches(&run_files);
                            let m = measured(&mut shell_cmd(then_sync));
                            if then_sync {
                                shell_sync.push(m);
                            } else {
                                shell.push(m);
                            }
                        }
                        _ => {
                            set_aside(&froot);
                            dropped_caches &= fresh_caches(&run_files);
                            ours.push(measured(
                                Command::new(&bin)
                                    .arg("--config")
                                    .arg(&fcfg)
                                    .args(["install", "app", "2.0.0"])
                                    .env("SWITCHYARD_NO_AGENT", "1"),
                            ));
                        }
                    }
                }
            }
            let ratio = ours.median() / shell.median();
            worst = worst.max(ratio);
            worst_rss = worst_rss.max(ours.peak_kib);
            let ext = p
                .asset
                .to_string_lossy()
                .rsplit_once("-2.0.0.")
                .map(|(_, e)| e.to_string())
                .unwrap_or_default();
            println!(
                "   {label:>5} {files:>6} files {ext:<7}: shell {:>5.2} s ({}) {:>5.1} MiB | shell+sync {:>5.2} s ({}) | switchyard {:>5.2} s ({}) {:>5.1} MiB | {ratio:.2}x ({:.2}x of shell+sync)",
                shell.median(),
                shell.spread(),
                shell.peak_kib as f64 / 1024.0,
                shell_sync.median(),
                shell_sync.spread(),
                ours.median(),
                ours.spread(),
                ours.peak_kib as f64 / 1024.0,
                ours.median() / shell_sync.median(),
            );
            println!(
                "          runs: shell [{}] shell+sync [{}] switchyard [{}]",
                shell.runs(),
                shell_sync.runs(),
                ours.runs()
            );
            set_aside(&out);
            set_aside(&froot);
        }
    }

    if !dropped_caches {
        println!(
            "   (not root: the page cache was not dropped between runs; figures drift as it fills memory)"
        );
    }

    println!("\nsummary:");
    println!(
        "  install time ratio {:.2} (target <= 1.00) | peak memory {:.1} MiB (target < 64) | second release {:.1}% of a full copy (target < 10) | revert ratio {:.2} (target <= 3)",
        sy_wall.as_secs_f64() / base_wall.as_secs_f64(),
        sy_rss as f64 / 1024.0,
        100.0 * unique as f64 / full.max(1) as f64,
        o.as_secs_f64() / s.as_secs_f64()
    );
    println!(
        "  formats: worst install/shell ratio {worst:.2} (goal <= 0.60) | worst peak memory {:.1} MiB (target < 64)",
        worst_rss as f64 / 1024.0
    );
}
