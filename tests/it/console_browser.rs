//! The web console (#16) in a real browser: Debian's `chromium`, driven
//! through `chromedriver` (WebDriver, with the fantoccini crate), against
//! the real agent with a console. One scenario shares one agent and one
//! browser to keep the run short: an operator signs in through the form,
//! reads the overview, opens the app, deploys a newer release through the
//! confirmation page and watches its steps advance live (the page's one
//! script, over Server-Sent Events, without a reload), reverts with
//! confirmation and finds both in the history under `console:olga`; then
//! a viewer sees no actions and is refused the confirmation page.
//!
//! With `SWITCHYARD_SCREENSHOTS_DIR` set, the scenario also saves a PNG of
//! each page there (`examples/console-screenshots.sh` sets it).

use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;

use crate::agent::{Agent, free_port};
use crate::common::{World, note, require_tool};
use crate::console::{PASSWORD, world};

/// The warm hook: slow enough to watch (about 2.5 s), printing as it goes.
const WARM: &str =
    r#"for i in 1 2 3 4 5; do echo "warming $SWITCHYARD_VERSION: part $i of 5"; sleep 0.5; done"#;

/// The activate hook (after the swap, and after a revert): about 1.5 s.
const ACTIVATE: &str =
    r#"echo "reloading the app server for $SWITCHYARD_VERSION"; sleep 1.5; echo "reloaded""#;

/// The least height of a page's screenshot, in pixels.
const MIN_SHOT_HEIGHT: u32 = 300;

/// How long a page may take to show what a step waits for.
const PAGE: Duration = Duration::from_secs(10);

/// How long the deploy may take, hooks included.
const DEPLOY: Duration = Duration::from_secs(30);

/// Records, in the page's `window`, every (deploy, step) pair the console's
/// script writes into the progress section, and every text of its hook
/// output box. The lists live as long as the page does: a reload would
/// drop them. Recorded in the page because WebDriver's answers can lag by
/// seconds while another tab waits on its POST: polling could miss a step.
const RECORDER: &str = r#"
window.__switchyardSteps = [];
window.__switchyardHooks = [];
var last = "", lastHooks = "";
function seen() {
  var id = document.getElementById("progress-id");
  var step = document.getElementById("progress-step");
  var hooks = document.getElementById("progress-hooks");
  if (!id || !step || !hooks) { return; }
  var now = id.textContent + "|" + step.textContent;
  if (now !== last) { last = now; window.__switchyardSteps.push(now); }
  if (hooks.textContent !== lastHooks && window.__switchyardHooks.length < 500) {
    lastHooks = hooks.textContent;
    window.__switchyardHooks.push(lastHooks);
  }
}
seen();
new MutationObserver(seen).observe(document.getElementById("progress"),
  { subtree: true, childList: true, characterData: true });
"#;

/// What [`RECORDER`] saw: the steps of deploys to `version`, in order
/// (repeats folded), and the hook output texts. `None` when the recorder is
/// gone: the page was reloaded.
async fn recorded(c: &Client, version: &str) -> Option<(Vec<String>, Vec<String>)> {
    let v = c
        .execute(
            "return window.__switchyardSteps ? [window.__switchyardSteps, window.__switchyardHooks] : null;",
            vec![],
        )
        .await
        .unwrap();
    let (seen, hooks): (Vec<String>, Vec<String>) = serde_json::from_value(v).ok()?;
    let mut steps: Vec<String> = seen
        .iter()
        .filter_map(|s| s.split_once('|'))
        .filter(|(id, _)| id.contains(&format!("\u{2192} {version}")))
        .map(|(_, step)| step.to_string())
        .collect();
    steps.dedup();
    Some((steps, hooks))
}

/// `chromedriver` on a free loopback port, in a process group of its own
/// with the browser it starts; dropping it kills the group.
struct Driver {
    child: Child,
    port: u16,
    /// The browser's profile (`--user-data-dir`), removed after the kill.
    profile: tempfile::TempDir,
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let d = Driver {
            child,
            port,
            profile: tempfile::tempdir().unwrap(),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen on port {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// Headless chromium with a throwaway profile (`--no-sandbox` as root,
    /// where chromium refuses to start otherwise).
    async fn browser(&self, chromium: &Path) -> Client {
        let mut args = vec![
            "--headless=new".to_string(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        if nix::unistd::geteuid().is_root() {
            args.push("--no-sandbox".into());
        }
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session through chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Where screenshots go, if anywhere.
struct Shots(Option<PathBuf>);

impl Shots {
    fn from_env() -> Shots {
        Shots(std::env::var_os("SWITCHYARD_SCREENSHOTS_DIR").map(PathBuf::from))
    }

    /// The whole page as `<name>.png`: the window is made as tall as the
    /// page's content for the shot (at least [`MIN_SHOT_HEIGHT`]), then put
    /// back.
    async fn page(&self, c: &Client, name: &str) {
        let Some(dir) = &self.0 else {
            return;
        };
        let size = c
            .execute(
                "return [window.outerWidth, window.outerHeight, window.outerHeight - window.innerHeight, Math.ceil(document.body.lastElementChild.getBoundingClientRect().bottom + window.scrollY) + 24];",
                vec![],
            )
            .await
            .unwrap();
        let n: Vec<u32> = serde_json::from_value(size).unwrap();
        let (width, height, chrome, page) = (n[0], n[1], n[2], n[3]);
        c.set_window_size(width, chrome + page.max(MIN_SHOT_HEIGHT))
            .await
            .unwrap();
        let png = c.screenshot().await.expect("screenshot");
        c.set_window_size(width, height).await.unwrap();
        save(dir, name, &png);
    }

    /// One element (found by `css`) as `<name>.png`.
    async fn element(&self, c: &Client, css: &str, name: &str) {
        if let Some(dir) = &self.0 {
            let e = c.find(Locator::Css(css)).await.expect(css);
            let png = e.screenshot().await.expect("element screenshot");
            save(dir, name, &png);
        }
    }
}

fn save(dir: &Path, name: &str, png: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(format!("{name}.png"));
    std::fs::write(&p, png).unwrap();
    note(&format!("screenshot: {}", p.display()));
}

/// The text of the element `css`, if there is one.
async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

/// Waits until the element `css` exists and `ok` holds for its text; the
/// text. Fails with the page's source after `limit`.
async fn until_text(c: &Client, css: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        if let Some(t) = text(c, css).await
            && ok(&t)
        {
            return t;
        }
        if start.elapsed() > limit {
            let src = c.source().await.unwrap_or_default();
            panic!(
                "{css} did not show what was expected within {limit:?} (now {:?}); the page:\n{src}",
                text(c, css).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the element `css` to show exactly `want`.
async fn until_is(c: &Client, css: &str, want: &str) {
    until_text(c, css, PAGE, |t| t.trim() == want).await;
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

/// Signs in as `user` through the login form (the page `c` is on).
async fn sign_in(c: &Client, user: &str) {
    until_text(c, "#login-form", PAGE, |_| true).await;
    fill(c, "#login-user", user).await;
    fill(c, "#login-password", PASSWORD).await;
    click(c, "#login-submit").await;
    until_text(c, "#whoami", PAGE, |t| t.starts_with(user)).await;
}

/// Picks `action` (and `version`) in the app page's action form and
/// continues to the confirmation page.
async fn choose(c: &Client, action: &str, version: &str) {
    c.find(Locator::Css("#action-select"))
        .await
        .expect("the operator's action form")
        .select_by_value(action)
        .await
        .unwrap();
    fill(c, "#action-version", version).await;
    click(c, "#action-continue").await;
    until_text(c, "#confirm-form", PAGE, |_| true).await;
}

/// The world: app `web` with slow warm and activate hooks, 1.0.0 live,
/// 1.1.0 and 1.2.0 in the release folder; an operator and a viewer.
fn setup() -> (World, u16) {
    let (w, console) = world("", &[("olga", "operator"), ("vera", "viewer")]);
    let cfg = std::fs::read_to_string(&w.config).unwrap().replacen(
        "keep_releases = 3\n",
        &format!("keep_releases = 3\nhooks.warm = '{WARM}'\nhooks.activate = '{ACTIVATE}'\n"),
        1,
    );
    std::fs::write(&w.config, cfg).unwrap();
    w.simple_release("1.0.0");
    w.ok(&["deploy", "web", "1.0.0"]);
    w.simple_release("1.1.0");
    w.simple_release("1.2.0");
    (w, console)
}

#[test]
fn an_operator_deploys_and_reverts_in_the_browser_and_a_viewer_only_reads() {
    let Some(chromium) = require_tool("chromium") else {
        return;
    };
    let Some(chromedriver) = require_tool("chromedriver") else {
        return;
    };
    let started = Instant::now();
    let driver = Driver::start(&chromedriver);
    let (w, console) = setup();
    let agent = Agent::start(&w);
    let base = format!("http://127.0.0.1:{console}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = driver.browser(&chromium).await;
        let run = AssertUnwindSafe(scenario(&c, &base, &w))
            .catch_unwind()
            .await;
        let _ = c.close().await;
        if let Err(panic) = run {
            note(&format!("the agent's log:\n{}", agent.log()));
            std::panic::resume_unwind(panic);
        }
    });
    drop(driver);
    note(&format!(
        "console in the browser: {:.1}s",
        started.elapsed().as_secs_f64()
    ));
}

async fn scenario(c: &Client, base: &str, w: &World) {
    let shots = Shots::from_env();
    let app_url = format!("{base}/apps/web");

    // Unauthenticated: the login form. Sign in as the operator.
    c.goto(&format!("{base}/")).await.unwrap();
    until_text(c, "#login-form", PAGE, |_| true).await;
    shots.page(c, "1-login").await;
    sign_in(c, "olga").await;

    // The overview lists the app with its live version; open it.
    until_is(c, "#app-web [data-field=live]", "1.0.0").await;
    shots.page(c, "2-overview").await;
    click(c, "#app-web a[data-field=name]").await;
    until_is(c, "#app-name", "web").await;
    until_is(c, "#live", "1.0.0").await;
    assert!(
        c.find(Locator::Css("#available li[data-version='1.1.0']"))
            .await
            .is_ok(),
        "1.1.0 is offered as an update"
    );

    // This tab stays on the app page and records what its script shows.
    c.execute(RECORDER, vec![]).await.unwrap();
    let app_tab = c.window().await.unwrap();

    // A second tab asks for the deploy: confirmation page, reason, confirm.
    let confirm_tab = c.new_window(true).await.unwrap().handle;
    c.switch_to_window(confirm_tab.clone()).await.unwrap();
    c.goto(&app_url).await.unwrap();
    choose(c, "deploy", "1.1.0").await;
    until_text(c, "h1", PAGE, |t| t == "Confirm: deploy").await;
    let what = text(c, "#confirm-what").await.unwrap();
    assert!(
        what.contains("live now: 1.0.0") && what.contains("Release: 1.1.0"),
        "{what}"
    );
    fill(c, "#confirm-reason", "ship the 1.1.0 fixes").await;
    shots.page(c, "3-confirm-deploy").await;
    // The POST answers when the deploy is done: click without waiting.
    c.execute(
        "setTimeout(function () { document.getElementById('confirm-submit').click(); }, 0);",
        vec![],
    )
    .await
    .unwrap();

    // Back on the app page: the steps advance with no reload.
    c.switch_to_window(app_tab.clone()).await.unwrap();
    let start = Instant::now();
    loop {
        let (steps, _) = recorded(c, "1.1.0")
            .await
            .expect("the recorder is still there: the page was not reloaded");
        if steps.iter().any(|s| s == "warm") {
            break;
        }
        assert!(
            start.elapsed() < DEPLOY,
            "the app page never showed the deploy's warm step: {steps:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Mid-deploy, unless WebDriver answered too late for that.
    shots.page(c, "4-app-deploying").await;
    until_is(c, "#live", "1.1.0").await;
    until_text(c, "#progress-state", DEPLOY, |t| t == "completed").await;
    let (steps, hooks) = recorded(c, "1.1.0")
        .await
        .expect("the recorder is still there: the page was not reloaded");
    assert!(
        steps.len() >= 2 && steps.iter().any(|s| s == "warm") && steps.last().unwrap() == "done",
        "the progress section showed the deploy's steps one after another: {steps:?}"
    );
    assert!(
        hooks.iter().any(|h| h.contains("warming 1.1.0: part")),
        "the warm hook's output showed while it ran: {hooks:?}"
    );
    note(&format!("steps the browser saw: {steps:?}"));

    // The confirming tab got the answer.
    c.switch_to_window(confirm_tab).await.unwrap();
    until_is(c, "#message-heading", "Done").await;
    let msg = text(c, "#message").await.unwrap();
    assert!(msg.contains("1.1.0 is live"), "{msg}");
    c.close_window().await.unwrap();
    c.switch_to_window(app_tab).await.unwrap();

    // Revert, with confirmation.
    choose(c, "revert", "").await;
    until_text(c, "h1", PAGE, |t| t == "Confirm: revert").await;
    let what = text(c, "#confirm-what").await.unwrap();
    assert!(what.contains("live now: 1.1.0"), "{what}");
    fill(c, "#confirm-reason", "1.1.0 slows the checkout").await;
    shots.page(c, "5-confirm-revert").await;
    click(c, "#confirm-submit").await;
    until_is(c, "#message-heading", "Done").await;
    let msg = text(c, "#message").await.unwrap();
    assert!(msg.contains("1.0.0 is live"), "{msg}");
    click(c, "#back").await;
    until_is(c, "#live", "1.0.0").await;

    // The history names the console user for both.
    let mut by_olga = Vec::new();
    for row in c
        .find_all(Locator::Css("#history-rows tr[data-actor='console:olga']"))
        .await
        .unwrap()
    {
        by_olga.push(row.attr("data-event").await.unwrap().unwrap_or_default());
    }
    for event in ["system.update.completed", "release.revert.completed"] {
        assert!(
            by_olga.iter().any(|e| e == event),
            "{event} by console:olga in the history: {by_olga:?}"
        );
    }
    shots.element(c, "#history", "6-history").await;
    assert_eq!(
        w.link("current").as_deref(),
        Some("releases/1.0.0"),
        "the revert is real"
    );

    // The overview: 1.0.0 live again, held by the revert.
    click(c, "#home").await;
    until_is(c, "#app-web [data-field=live]", "1.0.0").await;
    assert!(
        c.find(Locator::Css("#app-web [data-flag=hold]"))
            .await
            .is_ok(),
        "a revert holds the app"
    );
    shots.page(c, "7-overview").await;

    // Sign out; a viewer reads but has no actions and is refused them.
    click(c, "#logout").await;
    c.goto(&app_url).await.unwrap();
    sign_in(c, "vera").await;
    c.goto(&app_url).await.unwrap();
    until_is(c, "#live", "1.0.0").await;
    assert!(
        c.find(Locator::Css("#actions")).await.is_err(),
        "a viewer's app page has no actions"
    );
    c.goto(&format!("{app_url}/confirm?action=revert"))
        .await
        .unwrap();
    until_is(c, "#message-heading", "Not allowed").await;
    shots.page(c, "8-viewer-refused").await;
}
