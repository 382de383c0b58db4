//! Changing and running scheduled deploys (the file is `schedule.rs`'s),
//! always in a session: under the app's lock, recorded in the audit log.

use std::time::Instant;

use crate::ops::error::{DeployError, chain};
use crate::ops::lifecycle::{DeployOptions, DeployOutcome};
use crate::ops::schedule::{
    EntryState, ScheduleEntry, ScheduleError, ScheduleFile, load, parse_at, save,
};
use crate::ops::session::{Session, finish_schedule_event};
use crate::source::ReleaseSource;
use crate::store::history::Event;
use crate::store::state::{AppState, checkpoint, new_id, now_rfc3339};
use crate::version::{Version, VersionRequest};

/// An entry shown by its id or version.
fn matches(e: &ScheduleEntry, key: &str) -> bool {
    e.id == key || Version::parse(key).is_ok_and(|v| v == e.version)
}

impl Session<'_> {
    /// Schedules a deploy of `version` at `at`: refuses a time that has
    /// passed and a release the source does not offer.
    pub(super) fn schedule_add(
        &self,
        source: &dyn ReleaseSource,
        version: &Version,
        at: &str,
        zone: Option<&str>,
        allow_major: bool,
    ) -> Result<ScheduleEntry, DeployError> {
        let started = Instant::now();
        let (when, at_local) = parse_at(at, zone)?;
        let now = self.clock.now();
        if when <= now {
            return Err(ScheduleError::Past { at: when, now }.into());
        }
        // An unknown version is refused now, not at 3 a.m.
        let info = source.resolve(
            &VersionRequest::Exact(version.clone()),
            crate::source::include_prereleases(self.cfg),
        )?;
        let mut file = load(&self.paths)?;
        if let Some(e) = file
            .entries
            .iter()
            .find(|e| e.state == EntryState::Pending && e.version == info.version)
        {
            return Err(ScheduleError::Duplicate {
                app: self.cfg.name.clone(),
                version: e.version.clone(),
                id: e.id.clone(),
                at: e.at,
            }
            .into());
        }
        let entry = ScheduleEntry {
            id: new_id()[..8].to_string(),
            version: info.version.clone(),
            at: when,
            at_local,
            allow_major,
            by: self.actor.user.clone(),
            created: now_rfc3339(),
            state: EntryState::Pending,
            reason: None,
            finished: None,
        };
        file.entries.push(entry.clone());
        let ev = self.event_of("schedule.deploy.created", &entry, "ok", started, None);
        self.save_schedule_with_event(file, ev)?;
        Ok(entry)
    }

    /// Cancels the pending entry with this id or version.
    pub(super) fn schedule_cancel(&self, key: &str) -> Result<ScheduleEntry, DeployError> {
        let started = Instant::now();
        let mut file = load(&self.paths)?;
        let Some(e) = file
            .entries
            .iter_mut()
            .find(|e| e.state == EntryState::Pending && matches(e, key))
        else {
            return Err(ScheduleError::NotFound {
                app: self.cfg.name.clone(),
                key: key.to_string(),
            }
            .into());
        };
        e.state = EntryState::Cancelled;
        e.reason = Some(format!("cancelled by {}", self.actor.user));
        e.finished = Some(now_rfc3339());
        let entry = e.clone();
        let ev = self.event_of("schedule.deploy.cancelled", &entry, "ok", started, None);
        self.save_schedule_with_event(file, ev)?;
        Ok(entry)
    }

    /// Runs the pending entry `id` (the agent calls this once its time has
    /// come): marks it running, deploys, marks it done or failed.
    pub(super) fn schedule_run(
        &self,
        source: &dyn ReleaseSource,
        id: &str,
    ) -> Result<DeployOutcome, DeployError> {
        let started = Instant::now();
        let mut file = load(&self.paths)?;
        let Some(i) = file
            .entries
            .iter()
            .position(|e| e.id == id && e.state == EntryState::Pending)
        else {
            return Err(ScheduleError::NotFound {
                app: self.cfg.name.clone(),
                key: id.to_string(),
            }
            .into());
        };
        // A hold set while the agent waited for the lock still counts.
        if let Some(h) = AppState::load(&self.paths)?.hold {
            return Err(DeployError::Precheck(format!(
                "{} is held by {} ({}); the scheduled deploy of {} waits for `switchyard unhold {}`",
                self.cfg.name, h.by, h.reason, file.entries[i].version, self.cfg.name
            )));
        }
        // Marked before the deploy starts, so it never runs twice.
        file.entries[i].state = EntryState::Running;
        save(&self.paths, &file)?;
        let entry = file.entries[i].clone();
        let res = self.deploy(
            source,
            &VersionRequest::Exact(entry.version.clone()),
            DeployOptions {
                allow_downgrade: false,
                allow_major: entry.allow_major,
                force: false,
                // An operator's decision; the hold was checked above.
                automatic: false,
            },
        );
        let e = &mut file.entries[i];
        e.finished = Some(now_rfc3339());
        match &res {
            Ok(_) => e.state = EntryState::Done,
            Err(err) => {
                e.state = EntryState::Failed;
                e.reason = Some(chain(err));
            }
        }
        let entry = e.clone();
        let (outcome, error) = match &res {
            Ok(_) => ("ok", None),
            Err(_) => ("failed", entry.reason.clone()),
        };
        let ev = self.event_of("schedule.deploy.ran", &entry, outcome, started, error);
        self.save_schedule_with_event(file, ev)?;
        res
    }

    /// The audit event of a change to entry `e`.
    fn event_of(
        &self,
        event: &str,
        e: &ScheduleEntry,
        outcome: &str,
        started: Instant,
        error: Option<String>,
    ) -> Event {
        let mut details = serde_json::Map::new();
        details.insert("schedule_id".into(), e.id.clone().into());
        details.insert("at".into(), e.at.to_string().into());
        details.insert("allow_major".into(), e.allow_major.into());
        self.make_event(
            event,
            &e.id,
            None,
            Some(e.version.to_string()),
            outcome,
            started,
            error,
            details,
        )
    }

    /// Saves the schedule with the audit event of its change in one write,
    /// then appends the event (see [`Session::save_with_event`]).
    fn save_schedule_with_event(
        &self,
        mut file: ScheduleFile,
        ev: Event,
    ) -> Result<(), DeployError> {
        file.pending_event = Some(serde_json::to_value(&ev).unwrap_or_default());
        save(&self.paths, &file)?;
        checkpoint("schedule.saved");
        finish_schedule_event(&self.paths)
    }
}
