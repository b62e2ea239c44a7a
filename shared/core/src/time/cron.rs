//! Cron schedules: parsing and next fire times in an IANA time zone.
//!
//! Expressions are evaluated by `croner` (POSIX/Vixie semantics plus `L`, `W`, `#`, names
//! such as `MON` and `JAN`, and `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`) in the
//! zone's current rule from the IANA database ([`Zone`]: the rules are a few kilobytes,
//! where the whole database's history, which schedules looking ahead never need, was
//! 1.2 MB of every binary that evaluated one). Five fields fire on the minute; six put
//! seconds first.
//!
//! Daylight saving time, in the zone of the schedule:
//! - a fixed time that does not exist on a spring-forward day (02:30 when clocks jump from
//!   02:00 to 03:00) fires once, at the first valid instant after the gap (03:00);
//! - a fixed time that occurs twice on a fall-back day fires once, at its first
//!   occurrence;
//! - interval expressions (`*/15 * * * *`) fire at every matching wall-clock time that
//!   exists, so none fall in a gap and the repeated hour fires in both passes.

use chrono::{TimeZone, Utc};

use crate::time::calendar::Zone;
use crate::time::{BadTime, Timestamp};

/// A parsed schedule in its time zone.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    cron: croner::Cron,
    tz: Zone,
    seconds: bool,
}

/// The macros, and the fields they stand for.
const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// The five or six fields an expression stands for (macros expanded).
pub(super) fn fields(expression: &str) -> Result<Vec<String>, String> {
    let e = expression.trim();
    let expanded = if e.starts_with('@') {
        MACROS
            .iter()
            .find(|(m, _)| m.eq_ignore_ascii_case(e))
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                format!(
                    "`{e}` is not a cron macro; use one of @hourly, @daily, @weekly, @monthly, @yearly"
                )
            })?
    } else {
        e
    };
    let fields: Vec<String> = expanded.split_whitespace().map(str::to_string).collect();
    if !(5..=6).contains(&fields.len()) {
        return Err(format!(
            "`{e}` has {} field(s); a cron expression has 5 (minute hour day-of-month month day-of-week), or 6 with seconds first",
            fields.len()
        ));
    }
    Ok(fields)
}

impl CronSchedule {
    /// Parses `expression` for `timezone` (an IANA name; UTC when `None`). The error names
    /// what is wrong and how to write it.
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Self, BadTime> {
        let fields = fields(expression)?;
        let seconds = fields.len() == 6;
        let parser = croner::parser::CronParser::builder()
            .seconds(if seconds {
                croner::parser::Seconds::Required
            } else {
                croner::parser::Seconds::Disallowed
            })
            .build();
        let cron = parser.parse(&fields.join(" ")).map_err(|e| {
            format!(
                "`{}` is not a valid cron expression ({e}); the fields are {}minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC, day-of-week 0-6 or SUN-SAT",
                expression.trim(),
                if seconds { "second 0-59, " } else { "" }
            )
        })?;
        let tz = match timezone {
            None => Zone::UTC,
            Some(name) => Zone::named(name).map_err(|_| {
                format!(
                    "`{name}` is not an IANA time zone; write it like Europe/Paris, America/New_York or UTC"
                )
            })?,
        };
        // An expression that can never fire (`0 0 30 2 *`) is refused here, not found out
        // at run time. Whether a date matches does not depend on the zone, so this looks in
        // UTC.
        let never = |from: Option<chrono::DateTime<Utc>>| {
            from.is_none_or(|f| cron.find_next_occurrence(&f, false).is_err())
        };
        let never_fires = never(Utc.timestamp_millis_opt(0).single())
            && never(Utc.timestamp_millis_opt(4_102_444_800_000).single());
        let schedule = Self { cron, tz, seconds };
        if never_fires {
            return Err(BadTime(format!(
                "`{}` never fires (no date matches it)",
                expression.trim()
            )));
        }
        Ok(schedule)
    }

    /// Whether the expression has a seconds field (6 fields).
    pub fn has_seconds(&self) -> bool {
        self.seconds
    }

    /// The first fire time strictly after `t`; `None` when there is none within croner's
    /// search horizon.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let start = Utc
            .timestamp_millis_opt(t.millis())
            .single()?
            .with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(Timestamp::from_millis(next.timestamp_millis()))
    }

    /// The last fire time strictly before `t`.
    pub fn prev_before(&self, t: Timestamp) -> Option<Timestamp> {
        let start = Utc
            .timestamp_millis_opt(t.millis())
            .single()?
            .with_timezone(&self.tz);
        let prev = self.cron.find_previous_occurrence(&start, false).ok()?;
        Some(Timestamp::from_millis(prev.timestamp_millis()))
    }

    /// The fire times in `(from, to]`, at most `limit` of them.
    pub fn fire_times(&self, from: Timestamp, to: Timestamp, limit: usize) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = from;
        while out.len() < limit {
            match self.next_after(t) {
                Some(n) if n <= to => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }
}

/// The EventBridge Scheduler form of a 5-field expression: `cron(minutes hours
/// day-of-month month day-of-week year)`, with EventBridge's day-of-week numbering (1 is
/// Sunday), `?` in the day field that is not restricted, and steps written from their
/// start (`0/15`). Refuses what EventBridge cannot run: seconds (6 fields), and both day
/// fields restricted at once (cron matches either; EventBridge has no such form).
pub fn eventbridge_expression(expression: &str) -> Result<String, BadTime> {
    let f = fields(expression)?;
    if f.len() == 6 {
        return Err(BadTime::from(format!(
            "`{}` has a seconds field; EventBridge Scheduler fires at most once a minute: use 5 fields, or run this workflow in the local shape",
            expression.trim()
        )));
    }
    let (minute, hour, dom, month, dow) = (&f[0], &f[1], &f[2], &f[3], &f[4]);
    let any = |x: &str| x == "*" || x == "?";
    let (dom, dow) = match (any(dom), any(dow)) {
        (true, true) => ("*".to_string(), "?".to_string()),
        (false, true) => (simple_field(dom, 1, 31)?, "?".to_string()),
        (true, false) => ("?".to_string(), weekday_field(dow)?),
        (false, false) => {
            return Err(BadTime::from(format!(
                "`{}` restricts both day-of-month and day-of-week, which cron matches as either; EventBridge Scheduler cannot express that: use two triggers, one for each",
                expression.trim()
            )));
        }
    };
    Ok(format!(
        "cron({} {} {dom} {} {dow} *)",
        simple_field(minute, 0, 59)?,
        simple_field(hour, 0, 23)?,
        simple_field(month, 1, 12)?
    ))
}

/// A minute, hour, day-of-month or month field: `*/n` becomes `{min}/n`, and a stepped
/// range becomes its list.
fn simple_field(field: &str, min: u32, max: u32) -> Result<String, String> {
    let items: Result<Vec<String>, String> = field
        .split(',')
        .map(|item| {
            if let Some(step) = item.strip_prefix("*/") {
                return Ok(format!("{min}/{step}"));
            }
            match item.split_once('/') {
                Some((range, step)) => {
                    let (a, b) = range.split_once('-').unwrap_or((range, ""));
                    let a: u32 = a.parse().map_err(|_| bad(field))?;
                    let b: u32 = if b.is_empty() {
                        max
                    } else {
                        b.parse().map_err(|_| bad(field))?
                    };
                    let step: usize = step.parse().map_err(|_| bad(field))?;
                    Ok((a..=b.min(max))
                        .step_by(step.max(1))
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(","))
                }
                None => Ok(item.to_string()),
            }
        })
        .collect();
    Ok(items?.join(","))
}

fn bad(field: &str) -> String {
    format!("`{field}` cannot be written for EventBridge Scheduler")
}

/// A day-of-week field in EventBridge's numbering (1 = Sunday … 7 = Saturday); names stay.
fn weekday_field(field: &str) -> Result<String, String> {
    let day = |d: &str| -> Result<String, String> {
        match d.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(((n % 7) + 1).to_string()),
            Ok(_) => Err(bad(field)),
            Err(_) => Ok(d.to_ascii_uppercase()),
        }
    };
    let mut out = Vec::new();
    for item in field.split(',') {
        if let Some((d, nth)) = item.split_once('#') {
            if nth.eq_ignore_ascii_case("L") {
                out.push(format!("{}L", day(d)?));
            } else {
                out.push(format!("{}#{nth}", day(d)?));
            }
        } else if let Some(step) = item.strip_prefix("*/") {
            let step: usize = step.parse().map_err(|_| bad(field))?;
            for n in (0..7).step_by(step.max(1)) {
                out.push(day(&n.to_string())?);
            }
        } else if let Some((a, b)) = item.split_once('-') {
            match (a.parse::<u32>(), b.parse::<u32>()) {
                // Numbers are listed: 5-7 (Friday to Sunday) would wrap in 1-7.
                (Ok(a), Ok(b)) if a <= b => {
                    for n in a..=b {
                        out.push(day(&n.to_string())?);
                    }
                }
                (Ok(_), Ok(_)) => return Err(bad(field)),
                _ => out.push(format!("{}-{}", day(a)?, day(b)?)),
            }
        } else {
            out.push(day(item)?);
        }
    }
    out.dedup();
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn next(expr: &str, tz: Option<&str>, after: &str) -> String {
        CronSchedule::parse(expr, tz)
            .unwrap_or_else(|e| panic!("{e}"))
            .next_after(at(after))
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn next_fire_times_of_tricky_expressions() {
        let table = [
            // (expression, zone, after, next)
            (
                "0 9 * * MON-FRI",
                None,
                "2026-11-21T12:00:00Z",
                "2026-11-23T09:00:00.000Z",
            ),
            (
                "*/15 * * * *",
                None,
                "2026-11-23T10:07:00Z",
                "2026-11-23T10:15:00.000Z",
            ),
            (
                "0 0 L * *",
                None,
                "2028-02-01T00:00:00Z",
                "2028-02-29T00:00:00.000Z",
            ),
            (
                "0 12 15W * *",
                None,
                "2026-08-01T00:00:00Z",
                "2026-08-14T12:00:00.000Z",
            ),
            (
                "0 10 * * FRI#2",
                None,
                "2026-11-01T00:00:00Z",
                "2026-11-13T10:00:00.000Z",
            ),
            (
                "0 0 1 JAN,JUL *",
                None,
                "2026-02-01T00:00:00Z",
                "2026-07-01T00:00:00.000Z",
            ),
            (
                "@daily",
                None,
                "2026-11-23T10:00:00Z",
                "2026-11-24T00:00:00.000Z",
            ),
            (
                "@hourly",
                None,
                "2026-11-23T10:00:00Z",
                "2026-11-23T11:00:00.000Z",
            ),
            (
                "@weekly",
                None,
                "2026-11-23T10:00:00Z",
                "2026-11-29T00:00:00.000Z",
            ),
            (
                "@monthly",
                None,
                "2026-11-23T10:00:00Z",
                "2026-12-01T00:00:00.000Z",
            ),
            (
                "@yearly",
                None,
                "2026-11-23T10:00:00Z",
                "2027-01-01T00:00:00.000Z",
            ),
            (
                "*/10 * * * * *",
                None,
                "2026-11-23T10:00:01Z",
                "2026-11-23T10:00:10.000Z",
            ),
            (
                "0 8 * * *",
                Some("Europe/Paris"),
                "2026-11-23T00:00:00Z",
                "2026-11-23T07:00:00.000Z",
            ),
            (
                "0 8 * * *",
                Some("Europe/Paris"),
                "2026-07-01T00:00:00Z",
                "2026-07-01T06:00:00.000Z",
            ),
            (
                "0 8 * * *",
                Some("Asia/Kolkata"),
                "2026-11-23T00:00:00Z",
                "2026-11-23T02:30:00.000Z",
            ),
        ];
        for (expr, tz, after, want) in table {
            assert_eq!(
                next(expr, tz, after),
                want,
                "{expr} in {tz:?} after {after}"
            );
        }
    }

    #[test]
    fn a_time_skipped_by_spring_forward_fires_once_at_the_first_valid_instant_after_it() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let ny = CronSchedule::parse("30 2 * * *", Some("America/New_York")).unwrap();
        let fires = ny.fire_times(at("2026-03-07T12:00:00Z"), at("2026-03-10T00:00:00Z"), 10);
        let want = [
            "2026-03-08T07:00:00.000Z", // 03:00 EDT, the first instant after the gap
            "2026-03-09T06:30:00.000Z", // 02:30 EDT
        ];
        assert_eq!(
            fires.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            want
        );
        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        let berlin = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let fires = berlin.fire_times(at("2026-03-28T12:00:00Z"), at("2026-03-31T00:00:00Z"), 10);
        let want = ["2026-03-29T01:00:00.000Z", "2026-03-30T00:30:00.000Z"];
        assert_eq!(
            fires.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            want
        );
    }

    #[test]
    fn a_time_repeated_by_fall_back_fires_once() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let ny = CronSchedule::parse("30 1 * * *", Some("America/New_York")).unwrap();
        let fires = ny.fire_times(at("2026-10-31T12:00:00Z"), at("2026-11-03T00:00:00Z"), 10);
        let want = [
            "2026-11-01T05:30:00.000Z", // 01:30 EDT, the first of the two
            "2026-11-02T06:30:00.000Z", // 01:30 EST
        ];
        assert_eq!(
            fires.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            want
        );
        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let berlin = CronSchedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let fires = berlin.fire_times(at("2026-10-24T12:00:00Z"), at("2026-10-27T00:00:00Z"), 10);
        let want = ["2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"];
        assert_eq!(
            fires.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            want
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_named_with_the_fix() {
        let cases = [
            ("0 9 * *", None, "has 4 field(s)"),
            ("61 * * * *", None, "is not a valid cron expression"),
            ("0 9 * * FUNDAY", None, "is not a valid cron expression"),
            ("@fortnightly", None, "is not a cron macro"),
            ("0 0 30 2 *", None, "never fires"),
            (
                "0 9 * * *",
                Some("Mars/Olympus"),
                "is not an IANA time zone",
            ),
        ];
        for (expr, tz, want) in cases {
            let e = CronSchedule::parse(expr, tz).expect_err(expr);
            assert!(e.contains(want), "{expr}: {e}");
        }
        assert!(
            CronSchedule::parse("*/5 * * * * *", None)
                .unwrap()
                .has_seconds()
        );
        assert!(!CronSchedule::parse("@daily", None).unwrap().has_seconds());
    }

    /// EventBridge's form, evaluated the way EventBridge reads it: Quartz weekday numbering
    /// (1 = Sunday), `?`, and steps from a start; the year field dropped.
    fn eventbridge_schedule(form: &str, tz: &str) -> CronSchedule {
        let inner = form
            .strip_prefix("cron(")
            .and_then(|f| f.strip_suffix(" *)"))
            .unwrap_or_else(|| panic!("{form}"));
        let cron = croner::parser::CronParser::builder()
            .alternative_weekdays(true)
            .sloppy_ranges(true)
            .seconds(croner::parser::Seconds::Required)
            .build()
            .parse(&format!("0 {inner}"))
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        CronSchedule {
            cron,
            tz: Zone::named(tz).unwrap(),
            seconds: false,
        }
    }

    #[test]
    fn the_eventbridge_form_has_its_own_day_numbers_and_question_marks() {
        let cases = [
            ("0 9 * * MON-FRI", "cron(0 9 ? * MON-FRI *)"),
            ("*/15 * * * *", "cron(0/15 * * * ? *)"),
            ("0 0 L * *", "cron(0 0 L * ? *)"),
            ("0 10 * * 5#2", "cron(0 10 ? * 6#2 *)"),
            ("0 10 * * 0,7", "cron(0 10 ? * 1 *)"),
            ("0 10 * * 5-7", "cron(0 10 ? * 6,7,1 *)"),
            ("@daily", "cron(0 0 * * ? *)"),
        ];
        for (expr, want) in cases {
            assert_eq!(eventbridge_expression(expr).as_deref(), Ok(want), "{expr}");
        }
        assert!(
            eventbridge_expression("*/5 * * * * *")
                .unwrap_err()
                .contains("seconds")
        );
        assert!(
            eventbridge_expression("0 0 1 * MON")
                .unwrap_err()
                .contains("two triggers")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The translation keeps the fire times: both forms, evaluated over a year in the
        /// same zone, fire at the same instants.
        #[test]
        fn the_eventbridge_form_fires_at_the_same_times(
            minute in proptest::sample::select(vec!["0", "15", "0,30", "*/15", "10-20", "5-35/10"]),
            hour in proptest::sample::select(vec!["*", "8", "9-17", "*/6", "0,12"]),
            day in proptest::sample::select(vec![
                ("*", "*"), ("1", "*"), ("15", "*"), ("L", "*"), ("10W", "*"), ("1-7", "*"),
                ("*", "MON-FRI"), ("*", "0"), ("*", "7"), ("*", "1-5"), ("*", "5#2"),
                ("*", "SAT,SUN"), ("*", "5#L"), ("*", "5-7"),
            ]),
            month in proptest::sample::select(vec!["*", "1", "6-8", "JAN,JUL", "*/3"]),
            tz in proptest::sample::select(vec!["UTC", "America/New_York", "Europe/Berlin"]),
        ) {
            let expr = format!("{minute} {hour} {} {month} {}", day.0, day.1);
            let ours = CronSchedule::parse(&expr, Some(tz)).unwrap();
            let form = eventbridge_expression(&expr).unwrap();
            let theirs = eventbridge_schedule(&form, tz);
            let (from, to) = (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));
            proptest::prop_assert_eq!(
                ours.fire_times(from, to, 400),
                theirs.fire_times(from, to, 400),
                "{} -> {}", expr, form
            );
        }
    }

    /// The zones' current rules fire every schedule when the whole tz database does, over
    /// 2026 and 2027, across clock changes in both directions and both hemispheres.
    #[test]
    fn schedules_fire_as_with_the_whole_tz_database() {
        let zones = [
            "America/New_York",
            "America/Los_Angeles",
            "America/Sao_Paulo",
            "America/Santiago",
            "America/St_Johns",
            "Europe/Berlin",
            "Europe/London",
            "Europe/Dublin",
            "Australia/Sydney",
            "Australia/Lord_Howe",
            "Pacific/Auckland",
            "Pacific/Chatham",
            "Asia/Kolkata",
            "Asia/Tehran",
            "Africa/Cairo",
            "UTC",
        ];
        let exprs = [
            "30 2 * * *",
            "0 1 * * SUN",
            "0 * * * *",
            "0 0 1 * *",
            "15 3 * * *",
        ];
        let (from, to) = (at("2026-01-01T00:00:00Z"), at("2028-01-01T00:00:00Z"));
        for zone in zones {
            let tz: chrono_tz::Tz = zone.parse().expect("a zone");
            for expr in exprs {
                let ours = CronSchedule::parse(expr, Some(zone)).expect("parse");
                let mut want = Vec::new();
                let mut t = chrono::Utc
                    .timestamp_millis_opt(from.millis())
                    .unwrap()
                    .with_timezone(&tz);
                while want.len() < 20_000 {
                    let Ok(next) = ours.cron.find_next_occurrence(&t, false) else {
                        break;
                    };
                    if next.timestamp_millis() > to.millis() {
                        break;
                    }
                    want.push(Timestamp::from_millis(next.timestamp_millis()));
                    t = next;
                }
                assert_eq!(ours.fire_times(from, to, 20_000), want, "{expr} in {zone}");
            }
        }
    }

    #[test]
    fn the_fire_time_before_a_time_is_the_one_next_after_walks_to() {
        let s = CronSchedule::parse("15 8 * * MON-FRI", Some("Europe/Berlin")).expect("parse");
        let t = Timestamp::parse_rfc3339("2026-03-09T12:00:00Z").expect("time"); // a Monday
        let prev = s.prev_before(t).expect("prev");
        assert_eq!(
            prev,
            Timestamp::parse_rfc3339("2026-03-09T07:15:00Z").expect("time")
        );
        let before = s.prev_before(prev).expect("prev");
        assert_eq!(
            before,
            Timestamp::parse_rfc3339("2026-03-06T07:15:00Z").expect("time"),
            "Friday"
        );
        assert_eq!(s.next_after(before), Some(prev));
    }
}
