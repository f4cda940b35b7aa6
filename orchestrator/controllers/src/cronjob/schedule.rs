//! Cron schedules as CronJobs write them: five fields (minute, hour, day of month, month, day
//! of week) with `*`, lists, ranges, steps and month/day names, or a macro (`@hourly`, `@daily`,
//! `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`); evaluated in a time zone. When
//! both day fields are restricted a day matches either, as in Vixie cron and upstream.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month and day of week both restricted: either may match.
    either_day: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(s: &str, names: &[&str], offset: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + offset);
    }
    s.parse().map_err(|_| format!("invalid value {s:?}"))
}

/// One field as a bit set of allowed values in `min..=max`.
fn field(text: &str, min: u32, max: u32, names: &[&str], offset: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("invalid step {s:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err("step must be positive".into());
        }
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, offset)?, value(b, names, offset)?)
        } else {
            let v = value(range, names, offset)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Schedule {
    pub(crate) fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(format!("unknown macro {other:?}")),
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {text:?}",
                f.len()
            ));
        }
        let mut weekdays = field(f[4], 0, 7, &DAYS, 0)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        let restricted = |s: &str| !(s.starts_with('*') || s.starts_with('?'));
        Ok(Schedule {
            minutes: field(f[0], 0, 59, &[], 0)?,
            hours: field(f[1], 0, 23, &[], 0)?,
            days: field(f[2], 1, 31, &[], 0)?,
            months: field(f[3], 1, 12, &MONTHS, 1)?,
            weekdays,
            either_day: restricted(f[2]) && restricted(f[4]),
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.days & (1 << dt.day()) != 0;
        let dow = self.weekdays & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first scheduled time strictly after `after`, in `tz`; none within five years.
    pub(crate) fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        // Whole minutes: the next candidate is the start of the following minute.
        let mut t = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.checked_add(5.years()).ok()?;
        while t < limit {
            if self.months & (1 << t.month()) == 0 {
                t = t
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .start_of_day();
                continue;
            }
            if !self.day_matches(t) {
                t = t
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let at = t.to_zoned(tz.clone()).ok()?.timestamp();
            if at > after {
                return Some(at);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }

    /// Scheduled times in `(after, now]`: the latest one, and how many there were (capped).
    pub(crate) fn missed(
        &self,
        after: Timestamp,
        now: Timestamp,
        tz: &TimeZone,
    ) -> (Option<Timestamp>, usize) {
        let mut latest = None;
        let mut count = 0;
        let mut t = after;
        while let Some(next) = self.next(t, tz) {
            if next > now {
                break;
            }
            latest = Some(next);
            count += 1;
            t = next;
            if count > 100 {
                // Upstream gives up counting here; jump to the last one directly.
                latest = self.last_before(now, tz).or(latest);
                break;
            }
        }
        (latest, count)
    }

    /// The latest scheduled time at or before `now` within the last year: walk forward from a
    /// day back (at most 1440 steps), else from a year back.
    fn last_before(&self, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        for hours in [24, 24 * 366] {
            let mut t = now
                .checked_sub(jiff::SignedDuration::from_hours(hours))
                .ok()?;
            let mut best = None;
            while let Some(n) = self.next(t, tz) {
                if n > now {
                    break;
                }
                best = Some(n);
                t = n;
            }
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    #[test]
    fn parses_fields_names_steps_and_macros() {
        assert!(Schedule::parse("*/5 * * * *").is_ok());
        assert!(Schedule::parse("0 9-17 * jan-mar mon-fri").is_ok());
        assert_eq!(Schedule::parse("@daily"), Schedule::parse("0 0 * * *"));
        assert_eq!(Schedule::parse("0 0 * * 7"), Schedule::parse("0 0 * * 0"));
        assert!(Schedule::parse("* * *").unwrap_err().contains("5 fields"));
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("@sometimes").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
    }

    #[test]
    fn next_times() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            s.next(at("2026-01-01T10:07:30Z"), &utc()),
            Some(at("2026-01-01T10:15:00Z"))
        );
        assert_eq!(
            s.next(at("2026-01-01T10:15:00Z"), &utc()),
            Some(at("2026-01-01T10:30:00Z"))
        );
        let s = Schedule::parse("30 2 * * mon").unwrap();
        // 2026-01-01 is a Thursday; the next Monday is the 5th.
        assert_eq!(
            s.next(at("2026-01-01T00:00:00Z"), &utc()),
            Some(at("2026-01-05T02:30:00Z"))
        );
        let s = Schedule::parse("@yearly").unwrap();
        assert_eq!(
            s.next(at("2026-03-01T00:00:00Z"), &utc()),
            Some(at("2027-01-01T00:00:00Z"))
        );
        // Day of month OR day of week when both are given.
        let s = Schedule::parse("0 0 13 * fri").unwrap();
        assert_eq!(
            s.next(at("2026-01-01T00:00:00Z"), &utc()),
            Some(at("2026-01-02T00:00:00Z"))
        );
        // Feb 30 never happens.
        assert_eq!(
            Schedule::parse("0 0 30 2 *")
                .unwrap()
                .next(at("2026-01-01T00:00:00Z"), &utc()),
            None
        );
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let tz = TimeZone::get("Asia/Seoul").unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        // 09:00 in Seoul is 00:00 UTC.
        assert_eq!(
            s.next(at("2026-06-01T01:00:00Z"), &tz),
            Some(at("2026-06-02T00:00:00Z"))
        );
    }

    #[test]
    fn missed_schedules_report_the_latest() {
        let s = Schedule::parse("* * * * *").unwrap();
        let (latest, n) = s.missed(
            at("2026-01-01T00:00:30Z"),
            at("2026-01-01T00:05:10Z"),
            &utc(),
        );
        assert_eq!(latest, Some(at("2026-01-01T00:05:00Z")));
        assert_eq!(n, 5);
        let (latest, n) = s.missed(
            at("2026-01-01T00:00:00Z"),
            at("2026-01-03T00:00:10Z"),
            &utc(),
        );
        assert_eq!(latest, Some(at("2026-01-03T00:00:00Z")));
        assert!(n > 100);
        let (latest, n) = s.missed(
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:40Z"),
            &utc(),
        );
        assert_eq!((latest, n), (None, 0));
    }
}
