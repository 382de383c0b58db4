//! A GitHub asset as a lazy blocking [`Read`]: the download starts on the
//! first `read`, as a task on the bridge's runtime, and hands chunks over a
//! bounded channel, so the network stays busy while the pipeline hashes and
//! unpacks, and the artifact is never whole in memory. Progress shows as a
//! bar on a terminal, as log lines otherwise.

use std::io::{self, IsTerminal, Read};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::chain::chain;
use crate::source::github_api::{AssetRef, GithubApi, ProgressMode};

/// Chunks buffered between the download task and the reader: enough to keep
/// the network busy while the pipeline hashes and unpacks, and never the
/// whole artifact in memory.
const CHANNEL_CHUNKS: usize = 8;

enum Chunk {
    Data(Bytes),
    End,
    Failed(String),
}

/// The asset stream. Dropped unread, it never touches the network.
pub(crate) struct AssetReader {
    api: Arc<GithubApi>,
    handle: tokio::runtime::Handle,
    app: String,
    mode: ProgressMode,
    /// Taken when the download starts.
    asset: Option<AssetRef>,
    rx: Option<mpsc::Receiver<Chunk>>,
    buf: Bytes,
    failed: Option<String>,
    done: bool,
    progress: Option<Progress>,
}

impl AssetReader {
    /// A reader of `asset`, downloading on `handle` (the bridge's runtime).
    pub(crate) fn new(
        api: Arc<GithubApi>,
        handle: tokio::runtime::Handle,
        app: &str,
        mode: ProgressMode,
        asset: AssetRef,
    ) -> AssetReader {
        AssetReader {
            api,
            handle,
            app: app.to_string(),
            mode,
            asset: Some(asset),
            rx: None,
            buf: Bytes::new(),
            failed: None,
            done: false,
            progress: None,
        }
    }

    fn start(&mut self) {
        let Some(asset) = self.asset.take() else {
            return;
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        self.progress = Some(Progress::new(&self.app, self.mode, &asset));
        let api = self.api.clone();
        let app = self.app.clone();
        self.handle.spawn(async move {
            let mut resp = match api.open(&asset).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Chunk::Failed(e.to_string())).await;
                    return;
                }
            };
            loop {
                match resp.chunk().await {
                    Ok(Some(b)) => {
                        if tx.send(Chunk::Data(b)).await.is_err() {
                            debug!(app = %app, version = %asset.version, step = %"download", "reader dropped; download stopped");
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Chunk::End).await;
                        return;
                    }
                    Err(e) => {
                        // Without the URL: a storage URL's query string is a
                        // short-lived credential.
                        let _ = tx
                            .send(Chunk::Failed(format!(
                                "the download of {} broke off: {}; run the command again",
                                asset.name,
                                chain(&e.without_url())
                            )))
                            .await;
                        return;
                    }
                }
            }
        });
        self.rx = Some(rx);
    }
}

impl Read for AssetReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.buf.is_empty() {
                let n = out.len().min(self.buf.len());
                out[..n].copy_from_slice(&self.buf.split_to(n));
                return Ok(n);
            }
            if let Some(f) = &self.failed {
                return Err(io::Error::other(f.clone()));
            }
            if self.done {
                return Ok(0);
            }
            if self.rx.is_none() {
                self.start();
            }
            // Blocking: this reader is read from blocking threads only (see
            // `source::bridge`).
            let msg = match self.rx.as_mut() {
                Some(rx) => rx.blocking_recv(),
                None => None,
            };
            match msg {
                Some(Chunk::Data(b)) => {
                    if let Some(p) = &mut self.progress {
                        p.advance(b.len() as u64);
                    }
                    self.buf = b;
                }
                Some(Chunk::End) => {
                    self.done = true;
                    if let Some(p) = &mut self.progress {
                        p.finish();
                    }
                }
                Some(Chunk::Failed(e)) => {
                    if let Some(p) = &mut self.progress {
                        p.abandon();
                    }
                    self.failed = Some(e);
                }
                None => {
                    self.failed =
                        Some("the download stopped unexpectedly (its runtime shut down); run the command again".into());
                }
            }
        }
    }
}

/// Download progress: a bar on a terminal, log lines otherwise.
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines {
        app: String,
        version: String,
        name: String,
        total: Option<u64>,
        done: u64,
        next_report: u64,
        started: Instant,
    },
}

impl Progress {
    fn new(app: &str, mode: ProgressMode, a: &AssetRef) -> Progress {
        let tty = mode == ProgressMode::Auto && io::stderr().is_terminal();
        if tty {
            let bar = match a.size {
                Some(n) => indicatif::ProgressBar::with_draw_target(
                    Some(n),
                    indicatif::ProgressDrawTarget::stderr(),
                )
                .with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => indicatif::ProgressBar::with_draw_target(
                    None,
                    indicatif::ProgressDrawTarget::stderr(),
                )
                .with_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {spinner} {bytes} {binary_bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                ),
            };
            bar.set_message(a.name.clone());
            return Progress::Bar(bar);
        }
        info!(app = %app, version = %a.version, step = %"download", asset = %a.name,
            bytes = a.size.unwrap_or(0), "downloading");
        Progress::Lines {
            app: app.to_string(),
            version: a.version.clone(),
            name: a.name.clone(),
            total: a.size,
            done: 0,
            next_report: Self::step(a.size),
            started: Instant::now(),
        }
    }

    /// Report every tenth of the asset, or every 64 MiB when the size is unknown.
    fn step(total: Option<u64>) -> u64 {
        total.map(|t| (t / 10).max(1)).unwrap_or(64 << 20)
    }

    fn advance(&mut self, n: u64) {
        match self {
            Progress::Bar(b) => b.inc(n),
            Progress::Lines {
                app,
                version,
                name,
                total,
                done,
                next_report,
                started,
            } => {
                *done += n;
                if *done >= *next_report && total.is_none_or(|t| *done < t) {
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    let rate = (*done as f64 / secs) as u64;
                    let of = total
                        .map(|t| {
                            format!(
                                " of {} ({}%)",
                                indicatif::HumanBytes(t),
                                *done * 100 / t.max(1)
                            )
                        })
                        .unwrap_or_default();
                    let eta = total
                        .filter(|_| rate > 0)
                        .map(|t| {
                            format!(", about {} s left", (t.saturating_sub(*done)) / rate.max(1))
                        })
                        .unwrap_or_default();
                    info!(app = %app, version = %version, step = %"download", asset = %name,
                        "downloaded {}{of} at {}/s{eta}", indicatif::HumanBytes(*done), indicatif::HumanBytes(rate));
                    *next_report = *done + Self::step(*total);
                }
            }
        }
    }

    fn finish(&mut self) {
        match self {
            Progress::Bar(b) => b.finish(),
            Progress::Lines {
                app,
                version,
                name,
                done,
                started,
                ..
            } => {
                let secs = started.elapsed().as_secs_f64().max(0.001);
                info!(app = %app, version = %version, step = %"download", asset = %name,
                    bytes = *done, "downloaded {} in {:.1} s ({}/s)",
                    indicatif::HumanBytes(*done), secs, indicatif::HumanBytes((*done as f64 / secs) as u64));
            }
        }
    }

    fn abandon(&mut self) {
        if let Progress::Bar(b) = self {
            b.abandon();
        }
    }
}
