//! Who may lift a halt or revert a fleet (issue #15's threat model): a
//! host's token can write deployments too, so agents obey a `resume` or
//! `revert` only from a GitHub login in `[apps.NAME.fleet] operators` (the
//! deployment's `creator.login`, which GitHub sets from the token); a
//! `halt` from anyone. On the simulation harness: real agents, one mock
//! GitHub whose deployments' creator is the token's login (the operators'
//! `cli-…` tokens are `fleet-operator`, a host's token is its own login).
#![allow(clippy::disallowed_methods)]

use jiff::SignedDuration;

use crate::fleet::sim::{Fleet, FleetSpec, Host, TOKEN_VAR};

/// Canaries, then everyone 30 min later.
const PLAN: &str = r#"[rollout]
waves = [
  { hosts = ["canary"] },
  { percent = 100, after = "30m" },
]
max_failures = 2
"#;

const HOSTS: usize = 6;

/// The CLI on host `h`'s config with `token`, on the fleet's fake clock.
fn cli(f: &Fleet, h: &Host, token: &str, args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("switchyard"))
        .arg("--config")
        .arg(&h.config)
        .args(args)
        .env(TOKEN_VAR, token)
        .env("SWITCHYARD_FAKE_CLOCK_FILE", &f.clock)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "switchyard {args:?}:\n{o}\n{e}");
    (o, e)
}

/// An operator's command (the `cli-` token: login `fleet-operator`).
fn operator(f: &Fleet, h: &Host, args: &[&str]) -> String {
    cli(f, h, &format!("cli-{}", h.token), args).0
}

fn on(f: &Fleet, v: &str) -> usize {
    f.live()
        .values()
        .filter(|l| l.as_deref() == Some(v))
        .count()
}

fn status(f: &Fleet, h: &Host) -> serde_json::Value {
    let out = operator(
        f,
        h,
        &["fleet", "status", "web", "--version", "1.1.0", "--json"],
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn only_operators_lift_a_halt_or_revert_the_fleet() {
    let mut f = Fleet::start(FleetSpec {
        hosts: HOSTS,
        canaries: 1,
        app_extra: "poll_interval = \"10m\"\n".into(),
        start: "2026-04-06T00:00:00Z".parse().unwrap(),
    });
    let step = |f: &mut Fleet, mins: i64| f.step(SignedDuration::from_mins(mins));
    f.publish("v1.0.0", Some(PLAN), false);
    for _ in 0..3 {
        step(&mut f, 15);
    }
    assert_eq!(on(&f, "1.0.0"), HOSTS, "1.0.0 everywhere");
    f.publish("v1.1.0", Some(PLAN), false);
    step(&mut f, 15);
    assert_eq!(on(&f, "1.1.0"), 1, "the canary is on 1.1.0");
    let ops = f.hosts[0].id.clone();
    let intruder = f.hosts[HOSTS - 1].id.clone();
    operator(
        &f,
        f.host(&ops),
        &["fleet", "halt", "web", "1.1.0", "--reason", "latency up"],
    );

    // A host's token posts a resume: it is ignored, the halt stays.
    let h = f.host(&intruder);
    cli(
        &f,
        h,
        &h.token.clone(),
        &["fleet", "resume", "web", "1.1.0"],
    );
    let resume_id = f
        .mock
        .deployments()
        .iter()
        .filter(|d| d.task == "switchyard:control")
        .map(|d| d.id)
        .max()
        .unwrap();
    // Past the second wave's opening.
    step(&mut f, 45);
    step(&mut f, 15);
    assert_eq!(on(&f, "1.1.0"), 1, "no host deployed under the halt");
    assert_eq!(f.attempts("1.1.0").len(), 1);
    let s = status(&f, f.host(&ops));
    assert_eq!(s["halted"], true, "{s}");
    assert_eq!(s["halt"]["cause"], "operator", "{s}");
    assert_eq!(s["control"]["action"], "halt", "{s}");
    assert_eq!(s["control"]["creator"], "fleet-operator", "{s}");
    let ignored = s["ignored"].as_array().unwrap();
    assert_eq!(ignored.len(), 1, "{s}");
    assert_eq!(ignored[0]["action"], "resume");
    assert_eq!(ignored[0]["id"], resume_id);
    assert_eq!(ignored[0]["creator"], f.host(&intruder).token.as_str());
    let text = operator(
        &f,
        f.host(&ops),
        &["fleet", "status", "web", "--version", "1.1.0"],
    );
    assert!(
        text.contains("HALTED") && text.contains("IGNORED resume"),
        "{text}"
    );
    // Each agent logs it once, at warn, naming the login and the control.
    for h in &f.hosts {
        let warned = h
            .log()
            .lines()
            .filter(|l| {
                l.contains("ignoring a control action") && l.contains(&resume_id.to_string())
            })
            .count();
        assert_eq!(warned, 1, "{}:\n{}", h.id, h.log());
        assert!(h.log().contains(&f.host(&intruder).token), "{}", h.id);
    }

    // A host's token posts a revert: nobody goes back.
    let h = f.host(&intruder);
    cli(
        &f,
        h,
        &h.token.clone(),
        &[
            "fleet", "revert", "web", "1.1.0", "--now", "--reason", "takeover",
        ],
    );
    step(&mut f, 15);
    step(&mut f, 15);
    assert_eq!(on(&f, "1.1.0"), 1, "the canary stayed on 1.1.0");
    let s = status(&f, f.host(&ops));
    assert_eq!(s["control"]["action"], "halt", "{s}");
    assert_eq!(s["ignored"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["ignored"][0]["action"], "revert", "{s}");

    // The operator's resume still works.
    operator(&f, f.host(&ops), &["fleet", "resume", "web", "1.1.0"]);
    step(&mut f, 15);
    assert_eq!(on(&f, "1.1.0"), HOSTS, "the rollout continued");
    let s = status(&f, f.host(&ops));
    assert_eq!(s["halted"], false, "{s}");
    assert_eq!(s["ignored"].as_array().unwrap().len(), 0, "{s}");
}
