//! Schedules: when a plan with a `schedule:` block is due, which missed times to make up
//! (`catch_up`), and the scheduler's state file. The long-lived process is in [`daemon`].
//!
//! The cron expression and the time zone are parsed by [`crate::plan::schedule`] (the `schedule:`
//! block is part of the plan format, and loading checks it); due times are computed here in the
//! plan's time zone, so that `0 2 * * *` in `Europe/Berlin` is 02:00 Berlin time on both sides of a
//! daylight-saving change.

pub mod daemon;
pub mod takeover;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::plan::schedule::{parse_cron, parse_timezone};
use crate::plan::types::{CatchUp, Schedule};

/// At most this many missed times are run for `catch_up: all` (the latest ones).
pub const MAX_CATCH_UP: usize = 100;

/// Missed times are looked for at most this far back.
pub const MAX_LOOKBACK: Duration = Duration::from_secs(366 * 24 * 3600);

/// A plan's schedule, parsed.
#[derive(Clone, Debug)]
pub struct CronSpec {
    /// The expression as written.
    pub expr: String,
    /// The time zone as written (`UTC` when none).
    pub timezone: String,
    cron: croner::Cron,
    tz: jiff::tz::TimeZone,
}

impl CronSpec {
    /// Parses a plan's `schedule:` block (the cron expression and the time zone).
    pub fn new(s: &Schedule) -> Result<CronSpec, String> {
        Ok(CronSpec {
            expr: s.cron.clone(),
            timezone: s.timezone.clone().unwrap_or_else(|| "UTC".into()),
            cron: parse_cron(&s.cron)?,
            tz: parse_timezone(s.timezone.as_deref())?,
        })
    }

    /// The first due time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let ts = jiff::Timestamp::from_second(t.timestamp()).ok()?;
        let z = ts.to_zoned(self.tz.clone());
        let next = self.cron.find_next_occurrence(&z, false).ok()?;
        DateTime::from_timestamp(next.timestamp().as_second(), 0)
    }

    /// The due times in `(after, upto]`, oldest first: the latest `keep` of them and how many there
    /// were in all. Looks back at most [`MAX_LOOKBACK`] from `upto`.
    pub fn due_between(
        &self,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
        keep: usize,
    ) -> (Vec<DateTime<Utc>>, usize) {
        let floor = upto - chrono::Duration::from_std(MAX_LOOKBACK).unwrap_or_default();
        let mut t = after.max(floor);
        let mut out = VecDeque::new();
        let mut total = 0;
        while let Some(n) = self.next_after(t) {
            if n > upto {
                break;
            }
            total += 1;
            out.push_back(n);
            if out.len() > keep.max(1) {
                out.pop_front();
            }
            t = n;
        }
        (out.into(), total)
    }
}

/// What to do about the due times of one plan since the scheduler last looked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Scheduled times to run now, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// Due times that were missed (later than the grace period), in all.
    pub missed: usize,
    /// Missed times that will not be run.
    pub skipped: usize,
}

/// Decides which due times in `(cursor, now]` to run. A time no older than `grace` is on time and
/// runs whatever `catch_up` says; older ones are missed: `none` skips them, `latest` runs the latest
/// of them (only when no time is on time), `all` runs each, oldest first, up to [`MAX_CATCH_UP`].
pub fn decide(
    spec: &CronSpec,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: Duration,
    catch_up: CatchUp,
) -> Decision {
    let (times, total) = spec.due_between(cursor, now, MAX_CATCH_UP);
    let Some(&last) = times.last() else {
        return Decision::default();
    };
    let grace = chrono::Duration::from_std(grace).unwrap_or_default();
    let on_time = now - last <= grace;
    let missed = if on_time { total - 1 } else { total };
    let run = match catch_up {
        CatchUp::None if on_time => vec![last],
        CatchUp::None => Vec::new(),
        CatchUp::Latest => vec![last],
        CatchUp::All => times,
    };
    let skipped = total - run.len();
    Decision {
        run,
        missed,
        skipped,
    }
}

/// What the scheduler remembers about one plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanState {
    /// Every due time up to this one has been handled (run or skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_until: Option<DateTime<Utc>>,
    /// The scheduled time of the last run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DateTime<Utc>>,
    /// The run id of the last run, when it made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
    /// The exit code of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<i32>,
}

impl PlanState {
    /// Where catch-up starts: the later of `checked_until` and `last_run`.
    pub fn cursor(&self) -> Option<DateTime<Utc>> {
        self.checked_until.max(self.last_run)
    }
}

/// `RUNS/.scheduler/state.json`: the state of every plan, by plan name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// By plan name.
    #[serde(default)]
    pub plans: BTreeMap<String, PlanState>,
}

impl State {
    /// The state file under a runs directory.
    pub fn path(runs_dir: &Path) -> std::path::PathBuf {
        runs_dir.join(".scheduler").join("state.json")
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(path: &Path) -> std::io::Result<State> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state atomically: a temporary file, synced, renamed over the old one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".state.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cron: &str, tz: Option<&str>) -> CronSpec {
        CronSpec::new(&Schedule {
            cron: cron.into(),
            timezone: tz.map(str::to_string),
            overlap: None,
            catch_up: None,
        })
        .unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn due_times_are_read_in_the_plans_time_zone() {
        let s = spec("0 2 * * *", None);
        assert_eq!(
            s.next_after(t("2026-11-25T01:00:00Z")),
            Some(t("2026-11-25T02:00:00Z"))
        );
        // Exactly at a due time, the next one is tomorrow.
        assert_eq!(
            s.next_after(t("2026-11-25T02:00:00Z")),
            Some(t("2026-11-26T02:00:00Z"))
        );
        let s = spec("0 2 * * *", Some("+02:00"));
        assert_eq!(
            s.next_after(t("2026-11-25T01:00:00Z")),
            Some(t("2026-11-26T00:00:00Z"))
        );
    }

    #[test]
    fn iana_zones_follow_daylight_saving_when_the_system_has_them() {
        let Ok(_) = parse_timezone(Some("Europe/Berlin")) else {
            return; // no time zone database on this machine
        };
        let s = spec("0 2 * * *", Some("Europe/Berlin"));
        // Winter: UTC+1.
        assert_eq!(
            s.next_after(t("2026-11-25T00:00:00Z")),
            Some(t("2026-11-25T01:00:00Z"))
        );
        // Summer: UTC+2.
        assert_eq!(
            s.next_after(t("2026-07-01T00:00:00Z")),
            Some(t("2026-07-02T00:00:00Z"))
        );
    }

    #[test]
    fn a_time_skipped_by_daylight_saving_runs_once_at_the_next_valid_time() {
        let Ok(_) = parse_timezone(Some("Europe/Berlin")) else {
            return;
        };
        // 2026-03-29: Berlin clocks jump from 02:00 to 03:00; 02:30 does not exist that day.
        let s = spec("30 2 * * *", Some("Europe/Berlin"));
        let (v, total) = s.due_between(t("2026-03-28T12:00:00Z"), t("2026-03-30T12:00:00Z"), 10);
        assert_eq!(total, 2, "{v:?}");
        assert_eq!(v[0], t("2026-03-29T01:00:00Z"), "{v:?}");
        assert_eq!(v[1], t("2026-03-30T00:30:00Z"), "{v:?}");
    }

    #[test]
    fn due_between_keeps_the_latest_and_counts_all() {
        let s = spec("0 * * * *", None);
        let (v, total) = s.due_between(t("2026-11-25T00:00:00Z"), t("2026-11-25T05:30:00Z"), 3);
        assert_eq!(total, 5);
        assert_eq!(
            v,
            vec![
                t("2026-11-25T03:00:00Z"),
                t("2026-11-25T04:00:00Z"),
                t("2026-11-25T05:00:00Z")
            ]
        );
        // The upper bound is included.
        let (v, _) = s.due_between(t("2026-11-25T04:30:00Z"), t("2026-11-25T05:00:00Z"), 3);
        assert_eq!(v, vec![t("2026-11-25T05:00:00Z")]);
    }

    const GRACE: Duration = Duration::from_secs(120);

    #[test]
    fn catch_up_after_three_days_down() {
        let s = spec("0 2 * * *", None);
        let last = t("2026-11-22T02:00:00Z");
        let now = t("2026-11-25T03:00:00Z");
        let none = decide(&s, last, now, GRACE, CatchUp::None);
        assert!(none.run.is_empty());
        assert_eq!((none.missed, none.skipped), (3, 3));
        let latest = decide(&s, last, now, GRACE, CatchUp::Latest);
        assert_eq!(latest.run, vec![t("2026-11-25T02:00:00Z")]);
        assert_eq!((latest.missed, latest.skipped), (3, 2));
        let all = decide(&s, last, now, GRACE, CatchUp::All);
        assert_eq!(
            all.run,
            vec![
                t("2026-11-23T02:00:00Z"),
                t("2026-11-24T02:00:00Z"),
                t("2026-11-25T02:00:00Z")
            ]
        );
        assert_eq!((all.missed, all.skipped), (3, 0));
    }

    #[test]
    fn a_time_within_grace_runs_even_without_catch_up() {
        let s = spec("0 2 * * *", None);
        let d = decide(
            &s,
            t("2026-11-22T02:00:00Z"),
            t("2026-11-25T02:00:30Z"),
            GRACE,
            CatchUp::None,
        );
        assert_eq!(d.run, vec![t("2026-11-25T02:00:00Z")]);
        assert_eq!((d.missed, d.skipped), (2, 2));
        // Nothing due: nothing to do.
        let d = decide(
            &s,
            t("2026-11-25T02:00:00Z"),
            t("2026-11-25T10:00:00Z"),
            GRACE,
            CatchUp::All,
        );
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn catch_up_all_is_bounded() {
        let s = spec("* * * * *", None);
        let d = decide(
            &s,
            t("2026-11-25T00:00:00Z"),
            t("2026-11-25T10:00:00Z"),
            GRACE,
            CatchUp::All,
        );
        assert_eq!(d.run.len(), MAX_CATCH_UP);
        assert_eq!(d.run.last(), Some(&t("2026-11-25T10:00:00Z")));
        assert_eq!(d.skipped, 600 - MAX_CATCH_UP);
    }

    #[test]
    fn state_round_trips_atomically_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = State::path(dir.path());
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut s = State::default();
        s.plans.insert(
            "nightly".into(),
            PlanState {
                last_run: Some(t("2026-11-22T02:00:00Z")),
                ..PlanState::default()
            },
        );
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), s);
        assert_eq!(s.plans["nightly"].cursor(), Some(t("2026-11-22T02:00:00Z")));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
