//! A plan's `schedule:` block, read: the cron expression and the time zone it is read in. This is part
//! of the plan format, so it lives with the plan: loading checks a plan's schedule with these same
//! parsers, and the scheduler ([`crate::sched`]) builds on them, without the plan depending on the
//! scheduler (which depends on the plan and the executor).
//!
//! Cron expressions have five fields (minute hour day-of-month month day-of-week) as in Vixie cron,
//! parsed by `croner`; they are read in the plan's time zone (`jiff`: `UTC`, a fixed offset such as
//! `+02:00`, or an IANA name from the system's time zone database).

/// Parses a five-field cron expression (`@daily` and the other nicknames are accepted too).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| {
            let text = e.to_string();
            if expr.split_whitespace().count() != 5 && !expr.trim_start().starts_with('@') {
                format!(
                    "`{expr}` is not a five-field cron expression (minute hour day-of-month month day-of-week)"
                )
            } else {
                format!("`{expr}` is not a valid cron expression: {text}")
            }
        })
}

/// Parses a time zone: `UTC` (also the default), a fixed offset (`+02:00`, `-0530`, `UTC+2`), or
/// an IANA name (`Europe/Berlin`) from the system's time zone database.
pub fn parse_timezone(name: Option<&str>) -> Result<jiff::tz::TimeZone, String> {
    let Some(name) = name.map(str::trim) else {
        return Ok(jiff::tz::TimeZone::UTC);
    };
    if matches!(name, "UTC" | "utc" | "Z" | "Etc/UTC" | "GMT") {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    let offset_text = name
        .strip_prefix("UTC")
        .or_else(|| name.strip_prefix("GMT"))
        .unwrap_or(name);
    if offset_text.starts_with(['+', '-']) {
        return parse_offset(offset_text)
            .map(jiff::tz::TimeZone::fixed)
            .ok_or_else(|| {
                format!("`{name}` is not a UTC offset (write it like `+02:00` or `-05:30`)")
            });
    }
    jiff::tz::TimeZone::get(name).map_err(|_| {
        format!(
            "unknown time zone `{name}` (use `UTC`, an offset like `+02:00`, or an IANA name such as `Europe/Berlin`)"
        )
    })
}

/// `+HH`, `+HHMM`, `+HH:MM` (and `-`), at most 18 hours.
fn parse_offset(s: &str) -> Option<jiff::tz::Offset> {
    let sign: i32 = if s.starts_with('-') { -1 } else { 1 };
    let rest = &s[1..];
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    if h.is_empty() || h.len() > 2 || m.is_empty() || m.len() > 2 {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if h > 18 || m > 59 {
        return None;
    }
    jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_have_five_fields() {
        assert!(parse_cron("0 2 * * *").is_ok());
        assert!(parse_cron("*/15 9-17 * * MON-FRI").is_ok());
        assert!(parse_cron("@daily").is_ok());
        let e = parse_cron("0 0 2 * * *").unwrap_err();
        assert!(e.contains("five-field"), "{e}");
        let e = parse_cron("61 2 * * *").unwrap_err();
        assert!(e.contains("not a valid cron expression"), "{e}");
        assert!(parse_cron("every day").is_err());
    }

    #[test]
    fn time_zones_are_utc_offsets_or_iana_names() {
        assert_eq!(parse_timezone(None).unwrap(), jiff::tz::TimeZone::UTC);
        assert_eq!(
            parse_timezone(Some("UTC")).unwrap(),
            jiff::tz::TimeZone::UTC
        );
        for (s, secs) in [
            ("+02:00", 7200),
            ("-0530", -19800),
            ("UTC+2", 7200),
            ("+05:45", 20700),
        ] {
            let tz = parse_timezone(Some(s)).unwrap();
            let off = tz.to_offset(jiff::Timestamp::UNIX_EPOCH);
            assert_eq!(off.seconds(), secs, "{s}");
        }
        assert!(parse_timezone(Some("+25:00")).is_err());
        assert!(parse_timezone(Some("Mars/Olympus")).is_err());
    }
}
