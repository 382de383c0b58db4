//! The update policy's schema: which upgrades the agent deploys on its own
//! ([`AutoLevel`], [`auto_allows`]) and when it may deploy them ([`Window`]).

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;

use crate::version::Version;

/// Which upgrades the agent deploys without an operator (`auto = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoLevel {
    /// Never: every deploy is started by an operator.
    #[default]
    None,
    /// Patch upgrades within the same `MAJOR.MINOR`.
    Patch,
    /// Minor and patch upgrades within the same major version (within the
    /// same `0.MINOR` before 1.0).
    Minor,
    /// Every upgrade, majors included.
    All,
}

impl AutoLevel {
    /// The configuration spelling: `"none"`, `"patch"`, `"minor"` or `"all"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AutoLevel::None => "none",
            AutoLevel::Patch => "patch",
            AutoLevel::Minor => "minor",
            AutoLevel::All => "all",
        }
    }
}

impl fmt::Display for AutoLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AutoLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(AutoLevel::None),
            "patch" => Ok(AutoLevel::Patch),
            "minor" => Ok(AutoLevel::Minor),
            "all" => Ok(AutoLevel::All),
            _ => Err(format!(
                "unknown auto level {s:?}: write \"none\", \"patch\", \"minor\" or \"all\""
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for AutoLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// May the agent move from `current` to `candidate` on its own?
///
/// Only upgrades qualify: `candidate` must have a higher semver precedence
/// than `current` (build metadata is ignored, so `1.2.3+b2` is not an upgrade
/// over `1.2.3+b1`, and the agent never flip-flops between rebuilds).
///
/// - `None`: never.
/// - `Patch`: same `MAJOR.MINOR` (1.2.3 → 1.2.4, not 1.3.0).
/// - `Minor`: same `MAJOR` (1.2.3 → 1.3.0, not 2.0.0). Before 1.0 the minor
///   number is the breaking one, as in Cargo: 0.1.x → 0.1.y is allowed, but
///   0.1.x → 0.2.0 is a "major" upgrade and is not (so for 0.x, `Minor`
///   allows exactly what `Patch` allows). 0.0.x gets no extra rule.
/// - `All`: any upgrade.
///
/// With no current release only `All` installs: the first deploy of an app
/// (shared files, migrations, a first health check) should be watched by an
/// operator, and there is nothing to compare the candidate against.
///
/// Prereleases are not filtered here: `1.2.3 → 1.2.4-rc.1` is allowed at
/// `Patch`, like any upgrade within the same `MAJOR.MINOR`. Whether
/// prereleases are candidates at all is the channel's choice, made by the
/// caller before it asks.
pub(crate) fn auto_allows(
    level: AutoLevel,
    current: Option<&Version>,
    candidate: &Version,
) -> bool {
    let Some(current) = current else {
        return level == AutoLevel::All;
    };
    let (cur, cand) = (&current.0, &candidate.0);
    if cand.cmp_precedence(cur) != std::cmp::Ordering::Greater {
        return false;
    }
    // Below `all`, never a major upgrade by the one definition (for 0.0.z,
    // a patch bump is one).
    let major = candidate.is_major_upgrade_from(current);
    match level {
        AutoLevel::None => false,
        AutoLevel::Patch => !major && cand.major == cur.major && cand.minor == cur.minor,
        AutoLevel::Minor => !major && cand.major == cur.major,
        AutoLevel::All => true,
    }
}

/// One daily time range, in minutes since local midnight.
///
/// `start < end` is a range within one day; `start > end` wraps past
/// midnight into the next day. `start == end` is refused at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    /// 0..1440.
    start: u16,
    /// 1..=1440 (1440 is "24:00").
    end: u16,
}

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const FULL_DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MINUTES_PER_DAY: u16 = 24 * 60;

/// A maintenance window: days and a time range in a time zone.
///
/// The window is defined on the local wall clock: it is open whenever the
/// clock on the wall in its time zone shows a listed day and a time in one of
/// its ranges (start inclusive, end exclusive). A range whose end is before
/// its start wraps past midnight, and belongs to the day it starts on:
/// `Mon 23:00-01:00` is open from Monday 23:00 to Tuesday 01:00.
///
/// On daylight-saving days this means:
/// - spring forward (Europe/Berlin, 2026-03-29, 02:00 → 03:00): a range
///   starting in the skipped hour, say 02:30-05:00, opens at 03:00 local, the
///   first existing wall-clock time inside it; a range lying wholly in the
///   skipped hour (02:00-03:00) does not open that day at all;
/// - fall back (2026-10-25, 03:00 → 02:00): the repeated hour is inside a
///   range both times, so a range such as 02:30-02:45 opens twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Listed days, Monday first.
    days: [bool; 7],
    /// Sorted by start, no duplicates.
    ranges: Vec<Range>,
    tz: TimeZone,
    /// The zone's canonical name, for display.
    tz_name: String,
}

/// Why a window could not be parsed. Both carry the whole message; the
/// variant says which setting is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The days or time ranges (`window = "..."`).
    #[error("{0}")]
    Spec(String),
    /// The time zone (`timezone = "..."`).
    #[error("{0}")]
    TimeZone(String),
}

/// After this many time-zone transitions without an opening, `next_open`
/// gives up (real zones have two a year; a window opens every week).
const MAX_PIECES: usize = 64;

impl Window {
    /// Parses a window such as `"Sat,Sun 02:00-05:00"`, `"Mon-Fri 22:00-06:00"`
    /// (wraps past midnight: the range starts on the listed day),
    /// `"daily 03:00-04:00"` or `"Sat 02:00-05:00,14:00-15:00"` (several ranges
    /// on the same days), in `timezone` (an IANA name such as
    /// `"Europe/Berlin"`, or `"UTC"`).
    ///
    /// Days are `Mon` … `Sun` or their full names (any case), separated by
    /// commas; `Fri-Mon` style ranges wrap around the week; `daily` is every
    /// day. Times are 24-hour `HH:MM`; `24:00` is allowed as an end, so a
    /// whole day is `00:00-24:00`.
    pub fn parse(spec: &str, timezone: &str) -> Result<Window, WindowError> {
        let spec = spec.trim();
        let example = "write e.g. \"Sat,Sun 02:00-05:00\" or \"daily 03:00-04:00\"";
        if spec.is_empty() {
            return Err(WindowError::Spec(format!("the window is empty: {example}")));
        }
        // Day names hold no digits and times start with one: that is the split.
        let Some(split) = spec.find(|c: char| c.is_ascii_digit()) else {
            return Err(WindowError::Spec(format!(
                "window {spec:?} has no time range: {example}"
            )));
        };
        let (days_part, times_part) = spec.split_at(split);
        let days_part = days_part.trim();
        if days_part.is_empty() {
            return Err(WindowError::Spec(format!(
                "window {spec:?} lists no days: put them before the times, e.g. \"daily {spec}\" or \"Mon-Fri {spec}\""
            )));
        }
        let days = parse_days(days_part).map_err(WindowError::Spec)?;
        let ranges = parse_ranges(times_part).map_err(WindowError::Spec)?;
        let (tz, tz_name) = parse_timezone(timezone).map_err(WindowError::TimeZone)?;
        Ok(Window {
            days,
            ranges,
            tz,
            tz_name,
        })
    }

    /// Is the window open at `at`?
    pub fn contains(&self, at: Timestamp) -> bool {
        self.open_on_wall_clock(self.tz.to_offset(at).to_datetime(at))
    }

    /// The next instant ≥ `at` at which the window is open: `at` itself when
    /// it is open now, otherwise the earliest instant at which
    /// [`contains`](Self::contains) becomes true.
    ///
    /// Across daylight-saving changes this follows the wall clock (see the
    /// type's documentation): a 02:30 start on a spring-forward day in
    /// Europe/Berlin opens at 03:00 CEST, when the clock jumps into the
    /// range; a range wholly inside the skipped hour opens on its next listed
    /// day instead.
    ///
    /// Never panics: at the end of representable time it answers
    /// `Timestamp::MAX` (never), and if a pathological zone changes offset
    /// more than 64 times before the window opens, the instant reached so far,
    /// so the caller simply asks again then.
    pub fn next_open(&self, at: Timestamp) -> Timestamp {
        let mut t = at;
        for _ in 0..MAX_PIECES {
            // Between two transitions the offset is fixed and the wall clock
            // runs with time: search there in wall-clock terms, then convert.
            let offset = self.tz.to_offset(t);
            let wall = offset.to_datetime(t);
            if self.open_on_wall_clock(wall) {
                return t;
            }
            let Some(opens) = self.next_open_on_wall_clock(wall) else {
                return Timestamp::MAX;
            };
            let Ok(candidate) = offset.to_timestamp(opens) else {
                return Timestamp::MAX;
            };
            match self.tz.following(t).next().map(|tr| tr.timestamp()) {
                Some(transition) if transition > t && transition <= candidate => {
                    t = transition;
                }
                _ => return candidate,
            }
        }
        t
    }

    fn open_on_wall_clock(&self, wall: DateTime) -> bool {
        let day = weekday_index(wall.weekday());
        let previous = (day + 6) % 7;
        let minute = minute_of_day(wall);
        self.ranges.iter().any(|r| {
            if r.start < r.end {
                self.days[day] && r.start <= minute && minute < r.end
            } else {
                (self.days[day] && minute >= r.start) || (self.days[previous] && minute < r.end)
            }
        })
    }

    /// The first wall-clock time after `wall` (which is outside the window)
    /// at which a range starts on a listed day. On a continuous wall clock
    /// that is the only way into the window: the after-midnight part of a
    /// wrapping range is entered through its before-midnight part.
    fn next_open_on_wall_clock(&self, wall: DateTime) -> Option<DateTime> {
        let mut date = wall.date();
        // Eight days: the same weekday next week is always far enough.
        for _ in 0..=7 {
            if self.days[weekday_index(date.weekday())] {
                for r in &self.ranges {
                    let start = Time::new((r.start / 60) as i8, (r.start % 60) as i8, 0, 0).ok()?;
                    let at = date.to_datetime(start);
                    if at > wall {
                        return Some(at);
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days.iter().all(|&d| d) {
            f.write_str("daily")?;
        } else {
            let names: Vec<&str> = (0..7)
                .filter(|&i| self.days[i])
                .map(|i| DAY_NAMES[i])
                .collect();
            f.write_str(&names.join(","))?;
        }
        for (i, r) in self.ranges.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { "," })?;
            write!(
                f,
                "{:02}:{:02}-{:02}:{:02}",
                r.start / 60,
                r.start % 60,
                r.end / 60,
                r.end % 60
            )?;
        }
        write!(f, " {}", self.tz_name)
    }
}

fn weekday_index(day: jiff::civil::Weekday) -> usize {
    // 0..=6 by construction; the fallback only keeps this total.
    usize::try_from(day.to_monday_zero_offset()).unwrap_or(0) % 7
}

fn minute_of_day(dt: DateTime) -> u16 {
    let hour = u16::try_from(dt.hour()).unwrap_or(0);
    let minute = u16::try_from(dt.minute()).unwrap_or(0);
    hour * 60 + minute
}

fn parse_day(name: &str) -> Result<usize, String> {
    (0..7)
        .find(|&i| {
            name.eq_ignore_ascii_case(DAY_NAMES[i]) || name.eq_ignore_ascii_case(FULL_DAY_NAMES[i])
        })
        .ok_or_else(|| {
            format!(
                "unknown day {name:?}: write Mon, Tue, Wed, Thu, Fri, Sat or Sun, a range such as Mon-Fri, or \"daily\""
            )
        })
}

fn parse_days(part: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    for item in part.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "empty day in {part:?}: separate days with single commas, e.g. \"Sat,Sun\""
            ));
        }
        if item.eq_ignore_ascii_case("daily") {
            days = [true; 7];
        } else if let Some((from, to)) = item.split_once('-') {
            let (from, to) = (parse_day(from.trim())?, parse_day(to.trim())?);
            // Fri-Mon wraps around the week.
            let mut d = from;
            loop {
                days[d] = true;
                if d == to {
                    break;
                }
                d = (d + 1) % 7;
            }
        } else if item.contains(char::is_whitespace) {
            return Err(format!(
                "days {item:?} must be separated by commas, e.g. \"Sat,Sun\""
            ));
        } else {
            days[parse_day(item)?] = true;
        }
    }
    Ok(days)
}

fn parse_ranges(part: &str) -> Result<Vec<Range>, String> {
    let mut ranges = Vec::new();
    for item in part.split(',') {
        let item = item.trim();
        let Some((start, end)) = item.split_once('-') else {
            return Err(format!(
                "time range {item:?} needs a start and an end: write e.g. 02:00-05:00"
            ));
        };
        let start = parse_time(start.trim(), false)?;
        let end = parse_time(end.trim(), true)?;
        if start == end {
            return Err(format!(
                "time range {item:?} is empty (it starts where it ends): write e.g. 02:00-05:00, or 00:00-24:00 for a whole day"
            ));
        }
        ranges.push(Range { start, end });
    }
    ranges.sort();
    ranges.dedup();
    Ok(ranges)
}

/// `HH:MM` (or `H:MM`) as minutes since midnight; `24:00` only as an end.
fn parse_time(s: &str, is_end: bool) -> Result<u16, String> {
    let bad = || {
        format!(
            "bad time {s:?}: write 24-hour HH:MM such as 02:00 or 22:30{}",
            if is_end {
                " (24:00 for the end of the day)"
            } else {
                ""
            }
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let digits = |p: &str, max_len: usize| {
        !p.is_empty() && p.len() <= max_len && p.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 2) || !digits(m, 2) || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    let minutes = h * 60 + m;
    let valid = m < 60 && (h < 24 || (is_end && minutes == MINUTES_PER_DAY));
    if valid { Ok(minutes) } else { Err(bad()) }
}

fn parse_timezone(name: &str) -> Result<(TimeZone, String), String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(
            "the window's time zone is empty: write an IANA name such as \"Europe/Berlin\" or \"UTC\""
                .to_string(),
        );
    }
    // UTC works even on a host without a tz database.
    if name.eq_ignore_ascii_case("UTC") {
        return Ok((TimeZone::UTC, "UTC".to_string()));
    }
    let tz = TimeZone::get(name).map_err(|e| {
        format!(
            "unknown time zone {name:?} ({e}): write an IANA name such as \"Europe/Berlin\" or \"UTC\" (see /usr/share/zoneinfo)"
        )
    })?;
    let canonical = tz.iana_name().unwrap_or(name).to_string();
    Ok((tz, canonical))
}
