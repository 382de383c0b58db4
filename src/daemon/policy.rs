//! The agent's update policy: which upgrades it deploys on its own
//! ([`AutoLevel`], [`auto_allows`]), when it may deploy them ([`Window`]),
//! which releases may skip the window ([`Critical`], `critical_from` in
//! [`crate::verify::critical`]), the
//! combination of the two ([`decide`]), and the poll interval's jitter
//! ([`jittered`]). The time it all reads comes from the agent's
//! [`crate::clock::Clock`].

use std::time::Duration;

use jiff::Timestamp;

pub(crate) use crate::config::policy::{Window, auto_allows};
// The critical marking is read by ops too (check, status), so it lives below.
pub(crate) use crate::verify::critical::Critical;

/// What the agent should do with a release it is allowed to deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Deploy now.
    Now,
    /// Ask again at this instant.
    WaitUntil(Timestamp),
}

/// The window check with the critical override.
///
/// No window → `Now`; inside the window → `Now`; outside → `WaitUntil` the
/// next opening, unless the release is critical and its deadline has passed
/// (a deadline equal to `now` counts as passed; a critical release without a
/// deadline skips the window at once) → `Now`. A critical release whose
/// deadline is still ahead waits until the deadline or the next opening,
/// whichever comes first, so the agent wakes up when the override starts.
pub(crate) fn decide(
    window: Option<&Window>,
    critical: Option<&Critical>,
    now: Timestamp,
) -> Decision {
    let Some(window) = window else {
        return Decision::Now;
    };
    if window.contains(now) {
        return Decision::Now;
    }
    let opens = window.next_open(now);
    match critical {
        Some(Critical { deadline: None }) => Decision::Now,
        Some(Critical {
            deadline: Some(deadline),
        }) if *deadline <= now => Decision::Now,
        Some(Critical {
            deadline: Some(deadline),
        }) => Decision::WaitUntil(opens.min(*deadline)),
        None => Decision::WaitUntil(opens),
    }
}

/// Adds up to ±`fraction` random jitter to a poll interval, so many hosts
/// polling one source spread out; the result is never below 1 s.
///
/// `fraction` is clamped to 0..=1 (NaN counts as 0): `0.1` gives
/// 54 s..66 s for 60 s. An interval too large to jitter is returned as is.
pub(crate) fn jittered(interval: Duration, fraction: f64) -> Duration {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let factor = 1.0 + fraction * (2.0 * fastrand::f64() - 1.0);
    let out = Duration::try_from_secs_f64(interval.as_secs_f64() * factor).unwrap_or(interval);
    out.max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::{AutoLevel, auto_allows};
    use crate::version::Version;
    use jiff::tz::TimeZone;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc(spec: &str) -> Window {
        Window::parse(spec, "UTC").unwrap()
    }

    fn berlin(spec: &str) -> Window {
        Window::parse(spec, "Europe/Berlin").unwrap()
    }

    #[test]
    fn auto_level_parses_and_displays() {
        for (s, l) in [
            ("none", AutoLevel::None),
            ("patch", AutoLevel::Patch),
            ("minor", AutoLevel::Minor),
            ("all", AutoLevel::All),
        ] {
            assert_eq!(s.parse::<AutoLevel>().unwrap(), l);
            assert_eq!(l.to_string(), s);
        }
        assert_eq!(AutoLevel::default(), AutoLevel::None);
        let e = "major".parse::<AutoLevel>().unwrap_err();
        assert!(e.contains("\"major\"") && e.contains("\"minor\""), "{e}");
        assert!("".parse::<AutoLevel>().is_err());
    }

    #[test]
    fn auto_allows_table() {
        use AutoLevel::*;
        let cases: &[(AutoLevel, Option<&str>, &str, bool)] = &[
            (Patch, Some("1.2.3"), "1.2.4", true),
            (Minor, Some("1.2.3"), "1.2.4", true),
            (All, Some("1.2.3"), "1.2.4", true),
            (None, Some("1.2.3"), "1.2.4", false),
            (Patch, Some("1.2.3"), "1.3.0", false),
            (Minor, Some("1.2.3"), "1.3.0", true),
            (Minor, Some("1.2.3"), "2.0.0", false),
            (All, Some("1.2.3"), "2.0.0", true),
            // Downgrades and reinstalls never.
            (All, Some("1.2.3"), "1.2.2", false),
            (All, Some("1.2.3"), "1.2.3", false),
            (Patch, Some("1.2.4"), "1.2.3", false),
            (All, Some("2.0.0"), "1.9.9", false),
            (All, Some("1.2.3+b1"), "1.2.3+b2", false),
            // Prereleases: the caller's channel decides whether they are offered.
            (Patch, Some("1.2.3"), "1.2.4-rc.1", true),
            (Patch, Some("1.2.4-rc.1"), "1.2.4", true),
            (Patch, Some("1.2.4"), "1.2.4-rc.1", false),
            (Patch, Some("1.2.3"), "1.3.0-rc.1", false),
            (Minor, Some("1.2.3"), "1.3.0-rc.1", true),
            // 0.x: the minor number is the breaking one.
            (Patch, Some("0.1.2"), "0.1.3", true),
            (Minor, Some("0.1.2"), "0.1.3", true),
            (Minor, Some("0.1.2"), "0.2.0", false),
            (All, Some("0.1.2"), "0.2.0", true),
            (Minor, Some("0.9.0"), "1.0.0", false),
            (All, Some("0.9.0"), "1.0.0", true),
            // No current release: only All installs.
            (None, Option::None, "1.0.0", false),
            (Patch, Option::None, "1.0.0", false),
            (Minor, Option::None, "1.0.0", false),
            (All, Option::None, "1.0.0", true),
        ];
        for &(level, current, candidate, expected) in cases {
            let current = current.map(v);
            assert_eq!(
                auto_allows(level, current.as_ref(), &v(candidate)),
                expected,
                "{level} {current:?} -> {candidate}"
            );
        }
    }

    #[test]
    fn window_parse_errors_say_what_to_write() {
        let cases: &[(&str, &str, &str)] = &[
            ("", "UTC", "empty"),
            ("   ", "UTC", "empty"),
            ("Sat", "UTC", "no time range"),
            ("02:00-05:00", "UTC", "no days"),
            ("Xyz 02:00-05:00", "UTC", "unknown day \"Xyz\""),
            ("Sat,,Sun 02:00-05:00", "UTC", "empty day"),
            ("Sat Sun 02:00-05:00", "UTC", "commas"),
            ("Mon- 02:00-05:00", "UTC", "unknown day \"\""),
            ("Sat 25:00-26:00", "UTC", "bad time \"25:00\""),
            ("Sat 02:60-05:00", "UTC", "bad time \"02:60\""),
            ("Sat 2-5", "UTC", "bad time \"2\""),
            ("Sat 02:00", "UTC", "needs a start and an end"),
            ("Sat 02:00-", "UTC", "bad time \"\""),
            ("Sat 02:00-05:00,", "UTC", "needs a start and an end"),
            ("Sat 24:00-01:00", "UTC", "bad time \"24:00\""),
            ("Sat 02:00-24:30", "UTC", "bad time \"24:30\""),
            ("Sat 02:00-02:00", "UTC", "empty"),
            ("Sat 02:0-05:00", "UTC", "bad time"),
            ("Sat 0x:00-05:00", "UTC", "bad time \"0x:00\""),
            (
                "Sat 02:00-05:00",
                "Mars/Olympus",
                "unknown time zone \"Mars/Olympus\"",
            ),
            ("Sat 02:00-05:00", "", "time zone is empty"),
        ];
        for (spec, tz, want) in cases {
            let e = Window::parse(spec, tz).unwrap_err().to_string();
            assert!(e.contains(want), "{spec:?} {tz:?}: {e}");
        }
    }

    #[test]
    fn window_parse_forms() {
        assert_eq!(
            utc("Sat,Sun 02:00-05:00").to_string(),
            "Sat,Sun 02:00-05:00 UTC"
        );
        assert_eq!(utc("sat, SUNDAY 02:00-05:00"), utc("Sat,Sun 02:00-05:00"));
        assert_eq!(
            utc("Mon-Fri 22:00-06:00").to_string(),
            "Mon,Tue,Wed,Thu,Fri 22:00-06:00 UTC"
        );
        assert_eq!(
            utc("Sat - Mon 1:00-2:00").to_string(),
            "Mon,Sat,Sun 01:00-02:00 UTC"
        );
        assert_eq!(
            utc("daily 03:00-04:00").to_string(),
            "daily 03:00-04:00 UTC"
        );
        assert_eq!(utc("Mon-Sun 03:00-04:00"), utc("daily 03:00-04:00"));
        assert_eq!(
            utc("Sat 14:00-15:00, 02:00-05:00").to_string(),
            "Sat 02:00-05:00,14:00-15:00 UTC"
        );
        assert_eq!(
            utc("daily 00:00-24:00").to_string(),
            "daily 00:00-24:00 UTC"
        );
        assert_eq!(
            berlin("Sat 02:00-05:00").to_string(),
            "Sat 02:00-05:00 Europe/Berlin"
        );
        assert_eq!(
            Window::parse("Sat 02:00-05:00", "utc").unwrap(),
            utc("Sat 02:00-05:00")
        );
    }

    // 2026-03-23 is a Monday; 2026-03-28/29 the weekend of the spring change.
    #[test]
    fn contains_edges_and_days() {
        let w = utc("Sat,Sun 02:00-05:00");
        assert!(!w.contains(ts("2026-03-28T01:59:59.999Z")));
        assert!(w.contains(ts("2026-03-28T02:00:00Z")));
        assert!(w.contains(ts("2026-03-28T04:59:59.999Z")));
        assert!(!w.contains(ts("2026-03-28T05:00:00Z")));
        assert!(w.contains(ts("2026-03-29T03:00:00Z")));
        assert!(!w.contains(ts("2026-03-27T03:00:00Z")), "Friday");
        assert!(!w.contains(ts("2026-03-30T03:00:00Z")), "Monday");

        let all_day = utc("Tue 00:00-24:00");
        assert!(all_day.contains(ts("2026-03-24T00:00:00Z")));
        assert!(all_day.contains(ts("2026-03-24T23:59:59Z")));
        assert!(!all_day.contains(ts("2026-03-25T00:00:00Z")));
        assert!(!all_day.contains(ts("2026-03-23T23:59:59Z")));
    }

    #[test]
    fn contains_wraps_past_midnight() {
        let w = utc("Mon 23:00-01:00");
        assert!(w.contains(ts("2026-03-24T00:30:00Z")), "Tue 00:30");
        assert!(!w.contains(ts("2026-03-23T00:30:00Z")), "Mon 00:30");
        assert!(w.contains(ts("2026-03-23T23:00:00Z")), "Mon 23:00");
        assert!(!w.contains(ts("2026-03-23T22:59:00Z")), "Mon 22:59");
        assert!(!w.contains(ts("2026-03-24T01:00:00Z")), "Tue 01:00");
        assert!(!w.contains(ts("2026-03-24T23:30:00Z")), "Tue 23:30");

        let w = utc("Mon-Fri 22:00-06:00");
        assert!(
            w.contains(ts("2026-03-28T05:00:00Z")),
            "Sat 05:00 (Friday's night)"
        );
        assert!(!w.contains(ts("2026-03-29T05:00:00Z")), "Sun 05:00");
        assert!(!w.contains(ts("2026-03-23T05:00:00Z")), "Mon 05:00");
        assert!(w.contains(ts("2026-03-23T22:00:00Z")), "Mon 22:00");
        assert!(!w.contains(ts("2026-03-28T22:00:00Z")), "Sat 22:00");
    }

    #[test]
    fn contains_uses_the_window_time_zone() {
        // 01:30 UTC is 02:30 in Berlin in winter.
        let at = ts("2026-01-15T01:30:00Z");
        assert!(berlin("daily 02:00-05:00").contains(at));
        assert!(!utc("daily 02:00-05:00").contains(at));
        // In summer Berlin is UTC+2: 00:30 UTC is 02:30 there.
        let at = ts("2026-07-15T00:30:00Z");
        assert!(berlin("daily 02:00-05:00").contains(at));
        assert!(!utc("daily 02:00-05:00").contains(at));
        // The day is the local one: Sunday 00:30 in Berlin is Saturday in UTC.
        let at = ts("2026-07-11T22:30:00Z");
        assert!(berlin("Sun 00:00-01:00").contains(at));
        assert!(!utc("Sun 00:00-01:00").contains(at));
    }

    #[test]
    fn next_open_basic() {
        let w = utc("Sat,Sun 02:00-05:00");
        let inside = ts("2026-03-28T03:00:00Z");
        assert_eq!(w.next_open(inside), inside);
        assert_eq!(
            w.next_open(ts("2026-03-28T01:00:00Z")),
            ts("2026-03-28T02:00:00Z"),
            "before the start the same day"
        );
        assert_eq!(
            w.next_open(ts("2026-03-28T01:59:30.5Z")),
            ts("2026-03-28T02:00:00Z")
        );
        assert_eq!(
            w.next_open(ts("2026-03-28T05:00:00Z")),
            ts("2026-03-29T02:00:00Z"),
            "after the end: the next listed day"
        );
        assert_eq!(
            w.next_open(ts("2026-03-29T06:00:00Z")),
            ts("2026-04-04T02:00:00Z")
        );
        assert_eq!(
            w.next_open(ts("2026-03-25T12:00:00Z")),
            ts("2026-03-28T02:00:00Z")
        );

        let weekly = utc("Wed 10:00-11:00");
        assert_eq!(
            weekly.next_open(ts("2026-03-25T11:00:00Z")),
            ts("2026-04-01T10:00:00Z"),
            "almost a week ahead"
        );
        assert_eq!(
            weekly.next_open(ts("2026-03-25T09:59:59Z")),
            ts("2026-03-25T10:00:00Z")
        );

        let wrap = utc("Mon 23:00-01:00");
        assert_eq!(
            wrap.next_open(ts("2026-03-23T00:30:00Z")),
            ts("2026-03-23T23:00:00Z")
        );
        assert_eq!(
            wrap.next_open(ts("2026-03-24T00:30:00Z")),
            ts("2026-03-24T00:30:00Z")
        );
        assert_eq!(
            wrap.next_open(ts("2026-03-24T01:00:00Z")),
            ts("2026-03-30T23:00:00Z")
        );

        let two = utc("Sat 02:00-05:00,14:00-15:00");
        assert_eq!(
            two.next_open(ts("2026-03-28T06:00:00Z")),
            ts("2026-03-28T14:00:00Z")
        );
        assert_eq!(
            two.next_open(ts("2026-03-28T15:00:00Z")),
            ts("2026-04-04T02:00:00Z")
        );
    }

    #[test]
    fn next_open_in_a_time_zone() {
        let w = berlin("Sat 02:00-05:00");
        // Friday noon UTC: opens Saturday 02:00 CET = 01:00 UTC.
        assert_eq!(
            w.next_open(ts("2026-01-16T12:00:00Z")),
            ts("2026-01-17T01:00:00Z")
        );
        // In summer, 02:00 CEST = 00:00 UTC.
        assert_eq!(
            w.next_open(ts("2026-07-10T12:00:00Z")),
            ts("2026-07-11T00:00:00Z")
        );
    }

    #[test]
    fn spring_forward_in_berlin() {
        // 2026-03-29 02:00 CET (01:00 UTC) the clocks jump to 03:00 CEST.
        let before = ts("2026-03-28T23:00:00Z");
        let starts_in_gap = berlin("Sun 02:30-05:00");
        let opens = starts_in_gap.next_open(before);
        assert_eq!(opens, ts("2026-03-29T01:00:00Z"), "03:00 CEST");
        assert!(starts_in_gap.contains(opens));
        assert!(!starts_in_gap.contains(ts("2026-03-29T00:59:59Z")));

        // Wholly inside the skipped hour: next Sunday, 02:00 CEST.
        let in_gap = berlin("Sun 02:00-03:00");
        assert_eq!(in_gap.next_open(before), ts("2026-04-05T00:00:00Z"));

        // Across the change: 02:00 CET the day before, 02:00 CEST after.
        let daily = berlin("daily 02:00-03:00");
        assert_eq!(
            daily.next_open(ts("2026-03-27T12:00:00Z")),
            ts("2026-03-28T01:00:00Z")
        );
        assert_eq!(
            daily.next_open(ts("2026-03-28T12:00:00Z")),
            ts("2026-03-30T00:00:00Z")
        );
    }

    #[test]
    fn fall_back_in_berlin() {
        // 2026-10-25 03:00 CEST (01:00 UTC) the clocks go back to 02:00 CET.
        let w = berlin("Sun 02:30-02:45");
        assert_eq!(
            w.next_open(ts("2026-10-24T22:00:00Z")),
            ts("2026-10-25T00:30:00Z"),
            "first 02:30 (CEST)"
        );
        assert_eq!(
            w.next_open(ts("2026-10-25T00:50:00Z")),
            ts("2026-10-25T01:30:00Z"),
            "second 02:30 (CET)"
        );
        assert!(w.contains(ts("2026-10-25T01:35:00Z")));
        assert!(!w.contains(ts("2026-10-25T01:45:00Z")));

        // A range entered by the clock going back opens at the change.
        let w = berlin("Sun 01:30-02:15");
        assert_eq!(
            w.next_open(ts("2026-10-25T00:20:00Z")),
            ts("2026-10-25T01:00:00Z"),
            "02:20 CEST, then the clock shows 02:00 CET"
        );
    }

    /// `next_open` is the first instant `contains` is true, checked minute by
    /// minute around both changes of 2026.
    #[test]
    fn next_open_agrees_with_contains() {
        let windows = [
            berlin("Sun 02:30-05:00"),
            berlin("Sun 02:00-03:00"),
            berlin("daily 01:30-02:15"),
            berlin("Sat,Sun 23:30-02:30"),
            berlin("Sun 02:15-02:45,04:00-04:30"),
        ];
        for start in [ts("2026-03-28T20:00:00Z"), ts("2026-10-24T20:00:00Z")] {
            for w in &windows {
                for k in 0..16 {
                    let at = start + jiff::SignedDuration::from_secs(k * 23 * 60 + 7);
                    let open = w.next_open(at);
                    assert!(open >= at, "{w} {at}");
                    assert!(w.contains(open), "{w}: {at} -> {open}");
                    let mut t = at;
                    while t < open {
                        assert!(!w.contains(t), "{w}: {at} -> {open}, but open at {t}");
                        t += jiff::SignedDuration::from_secs(60);
                    }
                }
            }
        }
    }

    #[test]
    fn odd_zones_and_extremes_do_not_panic() {
        // Samoa skipped Friday 2011-12-30 entirely.
        let w = Window::parse("Fri 10:00-11:00", "Pacific/Apia").unwrap();
        let open = w.next_open(ts("2011-12-28T00:00:00Z"));
        assert!(w.contains(open));
        assert_eq!(
            open.to_zoned(TimeZone::get("Pacific/Apia").unwrap()).date(),
            jiff::civil::date(2012, 1, 6)
        );
        for w in [utc("Sat 02:00-05:00"), berlin("Mon 23:00-01:00")] {
            for at in [Timestamp::MIN, Timestamp::MAX, Timestamp::UNIX_EPOCH] {
                let _ = w.contains(at);
                assert!(w.next_open(at) >= at);
            }
        }
    }

    #[test]
    fn decide_cases() {
        let w = utc("Sat 02:00-05:00");
        let inside = ts("2026-03-28T03:00:00Z");
        let outside = ts("2026-03-25T12:00:00Z");
        let opens = ts("2026-03-28T02:00:00Z");
        assert_eq!(decide(None, None, outside), Decision::Now);
        assert_eq!(decide(Some(&w), None, inside), Decision::Now);
        assert_eq!(decide(Some(&w), None, outside), Decision::WaitUntil(opens));
        let no_deadline = Critical { deadline: None };
        assert_eq!(decide(Some(&w), Some(&no_deadline), outside), Decision::Now);
        let later = Critical {
            deadline: Some(ts("2026-03-26T00:00:00Z")),
        };
        assert_eq!(
            decide(Some(&w), Some(&later), outside),
            Decision::WaitUntil(ts("2026-03-26T00:00:00Z")),
            "wakes up at the deadline"
        );
        let after_window = Critical {
            deadline: Some(ts("2026-04-01T00:00:00Z")),
        };
        assert_eq!(
            decide(Some(&w), Some(&after_window), outside),
            Decision::WaitUntil(opens)
        );
        let past = Critical {
            deadline: Some(ts("2026-03-20T00:00:00Z")),
        };
        assert_eq!(decide(Some(&w), Some(&past), outside), Decision::Now);
        let exactly = Critical {
            deadline: Some(outside),
        };
        assert_eq!(decide(Some(&w), Some(&exactly), outside), Decision::Now);
        assert_eq!(decide(None, Some(&later), outside), Decision::Now);
    }

    /// The agent's loop in small: a window holds a deploy until it opens.
    #[test]
    fn a_window_holds_a_deploy_until_it_opens_fake_clock() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("now");
        let clock = crate::clock::from_var(Some(path.clone().into_os_string()));
        let w = berlin("Sat,Sun 02:00-05:00");
        crate::fs::write_atomic(&path, b"2026-01-16T12:00:00Z").unwrap();
        let Decision::WaitUntil(until) = decide(Some(&w), None, clock.now()) else {
            panic!("deployed outside the window");
        };
        assert_eq!(until, ts("2026-01-17T01:00:00Z"));
        crate::fs::write_atomic(&path, b"2026-01-17T00:59:59Z").unwrap();
        assert_eq!(
            decide(Some(&w), None, clock.now()),
            Decision::WaitUntil(until)
        );
        crate::fs::write_atomic(&path, until.to_string().as_bytes()).unwrap();
        assert_eq!(decide(Some(&w), None, clock.now()), Decision::Now);
    }

    #[test]
    fn jittered_stays_within_bounds() {
        let base = Duration::from_secs(60);
        let (lo, hi) = (Duration::from_secs(54), Duration::from_secs(66));
        let (mut below, mut above) = (false, false);
        for _ in 0..10_000 {
            let j = jittered(base, 0.1);
            assert!(j >= lo && j <= hi, "{j:?}");
            below |= j < base;
            above |= j > base;
        }
        assert!(below && above, "jitter goes both ways");
        assert_eq!(jittered(base, 0.0), base);
        assert_eq!(jittered(base, f64::NAN), base);
        assert_eq!(jittered(base, -1.0), base);
        assert_eq!(jittered(Duration::ZERO, 0.5), Duration::from_secs(1));
        for _ in 0..1_000 {
            assert!(jittered(Duration::from_millis(1500), 0.9) >= Duration::from_secs(1));
            let j = jittered(base, 7.0);
            assert!(
                j >= Duration::from_secs(1) && j <= Duration::from_secs(120),
                "{j:?}"
            );
        }
        let _ = jittered(Duration::MAX, 1.0);
    }
}
