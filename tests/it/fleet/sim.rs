//! The fleet simulation harness (issue #15): N real agents (separate
//! processes, separate roots, distinct `host_id`s and tokens, some labelled
//! `canary`) against one mock GitHub, all on one fake clock file. The test
//! moves the clock in steps; after each step it waits until every agent has
//! polled and every attempt has settled, then reads the ground truth: what
//! is live on each host, and every deployment the ledger holds, stamped with
//! the fake clock.
//!
//! Reusable for other fleet scenarios: start a fleet, publish releases with
//! plans, step the clock, read hosts and attempts.
#![allow(clippy::disallowed_methods, dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::mock_github::MockGithub;
use crate::mock_github::deployments::{MockDeployment, OPERATOR_LOGIN};

/// The environment variable holding each agent's token.
pub(crate) const TOKEN_VAR: &str = "SWITCHYARD_FLEET_TOKEN";

/// The bucket rule, re-implemented here from its documentation (so the
/// test checks the rule, not only the code against itself).
pub(crate) fn bucket(host: &str, app: &str, version: &str) -> u64 {
    let mut h = sha2::Sha256::new();
    h.update(host.as_bytes());
    h.update([0u8]);
    h.update(app.as_bytes());
    h.update([0u8]);
    h.update(version.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().unwrap()) % 10_000
}

/// One simulated host.
pub(crate) struct Host {
    pub id: String,
    pub labels: Vec<String>,
    pub dir: PathBuf,
    pub root: PathBuf,
    pub config: PathBuf,
    pub token: String,
    child: Option<Child>,
}

impl Host {
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The version live on the host, if any.
    pub(crate) fn current(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join("current/VERSION"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Runs the CLI against this host's configuration.
    pub(crate) fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env(TOKEN_VAR, &self.token)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fleet of agents on one mock GitHub and one fake clock.
pub(crate) struct Fleet {
    pub tmp: tempfile::TempDir,
    pub mock: MockGithub,
    pub hosts: Vec<Host>,
    pub clock: PathBuf,
    /// The publisher's signing key pair (every host trusts it).
    secret_key: PathBuf,
    public_b64: String,
    /// Listing requests seen per token after the last settle.
    polls: BTreeMap<String, usize>,
    /// Completed steps (polls each host made since start).
    pub steps: usize,
    /// One simulation at a time: two fleets of 50 agents on the same cores
    /// starve each other's polls. Last, so it is released after the agents
    /// stopped.
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// Held by the running simulation.
static ONE_FLEET: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What the fleet is configured with.
pub(crate) struct FleetSpec {
    pub hosts: usize,
    pub canaries: usize,
    /// `[apps.web]` extra lines (poll interval, health checks).
    pub app_extra: String,
    pub start: jiff::Timestamp,
}

impl Fleet {
    /// Starts `spec.hosts` agents; the first `spec.canaries` are labelled
    /// `canary`. Returns once every agent is ready and has polled once.
    pub(crate) fn start(spec: FleetSpec) -> Fleet {
        // A simulation that failed poisons the lock; the next may still run.
        let serial = ONE_FLEET.lock().unwrap_or_else(|p| p.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let (public_key, secret_key, _) =
            switchyard::testing::keygen(&base.join("keys"), None).unwrap();
        let public_b64 = std::fs::read_to_string(&public_key)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_string();
        let mock = MockGithub::start();
        let clock = base.join("clock");
        std::fs::write(&clock, spec.start.to_string()).unwrap();
        mock.with(|s| s.clock_file = Some(clock.clone()));
        let mut hosts = Vec::new();
        for i in 0..spec.hosts {
            let id = format!("host-{i:02}");
            let labels = if i < spec.canaries {
                vec!["canary".to_string()]
            } else {
                Vec::new()
            };
            let dir = base.join(&id);
            std::fs::create_dir_all(&dir).unwrap();
            let root = dir.join("root");
            let config = dir.join("switchyard.toml");
            let labels_toml = labels
                .iter()
                .map(|l| format!("\"{l}\""))
                .collect::<Vec<_>>()
                .join(", ");
            std::fs::write(
                &config,
                format!(
                    "[apps.web]\nroot = \"{}\"\nkeep_releases = 2\nauto = \"all\"\n{}\n\n[apps.web.source]\ngithub = \"acme/web\"\napi_url = \"{}\"\nasset = \"web-{{version}}.tar.gz\"\ntoken_env = \"{TOKEN_VAR}\"\n\n[apps.web.fleet]\nenvironment = \"production\"\noperators = [\"{OPERATOR_LOGIN}\"]\n\n[apps.web.trust]\nkeys = [\"{}\"]\n\n[agent]\nlisten = \"127.0.0.1:0\"\ncontrol_socket = \"{}\"\nshutdown_timeout = \"5s\"\nhost_id = \"{id}\"\nlabels = [{labels_toml}]\n",
                    root.display(),
                    spec.app_extra,
                    mock.api_url(),
                    public_b64,
                    dir.join("control.sock").display(),
                ),
            )
            .unwrap();
            hosts.push(Host {
                token: format!("tok-{id}"),
                id,
                labels,
                dir,
                root,
                config,
                child: None,
            });
        }
        for h in &mut hosts {
            let log = std::fs::File::create(h.dir.join("agent.log")).unwrap();
            h.child = Some(
                Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
                    .args(["--config", h.config.to_str().unwrap(), "agent"])
                    .env("SWITCHYARD_FAKE_CLOCK_FILE", &clock)
                    .env(TOKEN_VAR, &h.token)
                    // `poll finished` (debug) tells the harness a poll is over.
                    .env(
                        "RUST_LOG",
                        "switchyard=info,switchyard::daemon::agent=debug,warn",
                    )
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(240);
        for h in &hosts {
            while !h.log().contains("agent ready") {
                assert!(
                    Instant::now() < deadline,
                    "{} did not come up:\n{}",
                    h.id,
                    h.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut f = Fleet {
            tmp,
            mock,
            hosts,
            clock,
            secret_key,
            public_b64,
            polls: BTreeMap::new(),
            steps: 0,
            _serial: serial,
        };
        // The first poll comes 500 ms (of the fake clock) after an app task
        // starts, which may be after the first move: nudge until all polled.
        f.step_with(jiff::SignedDuration::from_secs(1), true);
        f
    }

    /// The fake clock's time.
    pub(crate) fn now(&self) -> jiff::Timestamp {
        std::fs::read_to_string(&self.clock)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn set_now(&self, t: jiff::Timestamp) {
        let tmp = self.clock.with_extension("tmp");
        std::fs::write(&tmp, t.to_string()).unwrap();
        std::fs::rename(&tmp, &self.clock).unwrap();
    }

    /// Packs, signs and publishes release `tag` (with `plan` as its signed
    /// `release.toml` when given), published now on the fake clock. A `bad`
    /// release carries a `BROKEN` file, which the live check of the fleet's
    /// configuration refuses.
    pub(crate) fn publish(&self, tag: &str, plan: Option<&str>, bad: bool) {
        self.publish_with(tag, plan, bad, true)
    }

    /// As [`Self::publish`]; `sign_plan = false` ships the plan unsigned
    /// (a `release.toml` without `release.toml.minisig`).
    pub(crate) fn publish_with(&self, tag: &str, plan: Option<&str>, bad: bool, sign_plan: bool) {
        let v = tag.trim_start_matches('v');
        let src = self.tmp.path().join(format!("build-{tag}"));
        std::fs::create_dir_all(src.join("public")).unwrap();
        std::fs::write(src.join("VERSION"), format!("{v}\n")).unwrap();
        std::fs::write(src.join("public/index.html"), format!("<h1>{v}</h1>\n")).unwrap();
        if bad {
            std::fs::write(src.join("BROKEN"), "this release fails its live check\n").unwrap();
        }
        let signing = switchyard::testing::Signing {
            key: self.secret_key.clone(),
            password: None,
            repo: Some("acme/web".into()),
        };
        let out = self.tmp.path().join("publish");
        let mut p = switchyard::testing::pack_signed(
            &src,
            tag,
            &out,
            Some("web-{version}.tar.gz"),
            Some(&signing),
        )
        .unwrap();
        match plan {
            Some(plan) if sign_plan => {
                switchyard::testing::write_release_toml(&mut p, tag, plan.as_bytes(), &signing)
                    .unwrap()
            }
            Some(plan) => std::fs::write(p.dir.join("release.toml"), plan).unwrap(),
            None => {}
        }
        let mut r = self.mock.release_from_dir(tag, &p.dir);
        r.published_at = self.now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        // Newest first, as GitHub lists.
        self.mock.with(|s| s.releases.insert(0, r));
    }

    /// Finished polls per host token so far (the agent's `poll finished`).
    fn poll_counts(&self) -> BTreeMap<String, usize> {
        self.hosts
            .iter()
            .map(|h| (h.token.clone(), h.log().matches("poll finished").count()))
            .collect()
    }

    /// Moves the clock by `d`, then waits until every agent polled and no
    /// attempt is still in progress.
    pub(crate) fn step(&mut self, d: jiff::SignedDuration) {
        self.step_with(d, false)
    }

    fn step_with(&mut self, d: jiff::SignedDuration, nudge: bool) {
        self.set_now(self.now() + d);
        // Generous: the machine may be busy with other tests (2 cores).
        let deadline = Instant::now() + Duration::from_secs(240);
        // A host whose poll was still running when the clock moved (a busy
        // machine) plans its next poll from the new time: after a while,
        // move the clock past one poll interval (1 min ± 10 %) so it polls.
        // At the start, app tasks may begin after the first move: 1 s is enough.
        let (every, by) = if nudge {
            (Duration::from_secs(2), jiff::SignedDuration::from_secs(1))
        } else {
            (Duration::from_secs(15), jiff::SignedDuration::from_secs(70))
        };
        let mut next_nudge = Instant::now() + every;
        loop {
            if Instant::now() > next_nudge {
                self.set_now(self.now() + by);
                next_nudge = Instant::now() + every;
            }
            let counts = self.poll_counts();
            let all_polled = self.hosts.iter().all(|h| {
                counts.get(&h.token).copied().unwrap_or(0)
                    > self.polls.get(&h.token).copied().unwrap_or(0)
            });
            let settled = self
                .mock
                .deployments()
                .iter()
                .all(|d| !matches!(d.state(), Some("in_progress") | None));
            if all_polled && settled && self.quiet(Duration::from_millis(250)) {
                self.polls = counts;
                self.steps += 1;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the fleet did not settle after moving the clock to {}; hosts that did not poll: {:?}",
                self.now(),
                self.hosts
                    .iter()
                    .filter(|h| counts.get(&h.token).copied().unwrap_or(0)
                        <= self.polls.get(&h.token).copied().unwrap_or(0))
                    .map(|h| h.id.clone())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// No request reached the mock for `d`.
    fn quiet(&self, d: Duration) -> bool {
        let n = self.mock.with(|s| s.seen.len());
        std::thread::sleep(d);
        self.mock.with(|s| s.seen.len()) == n
    }

    /// Each host's live version, by host id.
    pub(crate) fn live(&self) -> BTreeMap<String, Option<String>> {
        self.hosts
            .iter()
            .map(|h| (h.id.clone(), h.current()))
            .collect()
    }

    /// The attempts (task `deploy`) of `version`, oldest first.
    pub(crate) fn attempts(&self, version: &str) -> Vec<MockDeployment> {
        self.mock
            .deployments()
            .into_iter()
            .filter(|d| d.task == "deploy" && d.field("version") == version)
            .collect()
    }

    /// API requests per host so far (by its token).
    pub(crate) fn requests_per_host(&self) -> BTreeMap<String, usize> {
        let by = self.mock.api_hits_by_token();
        self.hosts
            .iter()
            .map(|h| {
                let n = by
                    .get(&format!("Bearer {}", h.token))
                    .map_or(0, |v| v.len());
                (h.id.clone(), n)
            })
            .collect()
    }

    /// Ledger requests (paths under `/deployments`) per host so far.
    pub(crate) fn ledger_requests_per_host(&self) -> BTreeMap<String, usize> {
        let by = self.mock.api_hits_by_token();
        self.hosts
            .iter()
            .map(|h| {
                let n = by.get(&format!("Bearer {}", h.token)).map_or(0, |v| {
                    v.iter().filter(|s| s.path.contains("/deployments")).count()
                });
                (h.id.clone(), n)
            })
            .collect()
    }

    /// GETs `path` from a host's HTTP listener (its port is in its log).
    pub(crate) fn http_get(&self, h: &Host, path: &str) -> String {
        use std::io::{Read, Write};
        let log = h.log();
        let port: u16 = log
            .split("listen=127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("the agent logs its listening address");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// The host with id `id`.
    pub(crate) fn host(&self, id: &str) -> &Host {
        self.hosts.iter().find(|h| h.id == id).unwrap()
    }
}

/// A plan's wave opening offsets from the start, in minutes, and the wave
/// of a host (from 1), as the README documents the rule.
pub(crate) struct PlanModel {
    /// (labels, percent, after minutes) per wave.
    pub waves: Vec<(Vec<String>, Option<u64>, i64)>,
}

impl PlanModel {
    pub(crate) fn wave_of(&self, labels: &[String], bucket: u64) -> usize {
        self.waves
            .iter()
            .position(|(hosts, pct, _)| {
                hosts.iter().any(|h| labels.contains(h)) || pct.is_some_and(|p| p * 100 > bucket)
            })
            .unwrap()
            + 1
    }

    /// Minutes from the start until wave `w` (from 1) opens.
    pub(crate) fn opens_after(&self, w: usize) -> i64 {
        self.waves.iter().take(w).map(|(_, _, a)| a).sum()
    }
}

/// Parses a deployment's `created_at`.
pub(crate) fn created(d: &MockDeployment) -> jiff::Timestamp {
    d.created_at.parse().unwrap()
}

/// Unused path helper kept for scenarios that look at a host's files.
pub(crate) fn in_root(h: &Host, rel: &str) -> PathBuf {
    Path::new(&h.root).join(rel)
}
