//! Local time for template conditions (`weekday`, `local_time`, `in_time_window`), from
//! each IANA zone's current rule (`time/tz_rules.rs`, a POSIX TZ string per zone): a few
//! kilobytes instead of a time-zone database in every function (about 2 MB). Times are read
//! with today's rules: an instant before a zone last changed its rules may be off by the
//! change, and Morocco's yearly Ramadan change (dates set year by year) is not known.

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc, Weekday};

use super::BadTime;
use super::tz_rules::ZONES;

/// A zone's rule: standard offset, and the daylight-saving offset with its two changes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rule {
    /// Seconds east of UTC.
    std: i32,
    dst: Option<Dst>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Dst {
    offset: i32,
    start: Change,
    end: Change,
}

/// When daylight saving starts or ends: a day of the year and a local time.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Change {
    day: Day,
    /// Seconds after local midnight (may be negative or past 24 h).
    at: i32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Day {
    /// `Jn`: 1 to 365, February 29 never counted.
    Julian(u32),
    /// `n`: 0 to 365, February 29 counted.
    Zero(u32),
    /// `Mm.w.d`: day `d` (0 = Sunday) of week `w` (5 = the last) of month `m`.
    Month { month: u32, week: u32, weekday: u32 },
}

fn rule_of(zone: &str) -> Result<Rule, String> {
    if zone.eq_ignore_ascii_case("UTC") || zone == "Z" {
        return Ok(Rule { std: 0, dst: None });
    }
    let i = ZONES
        .binary_search_by(|(name, _)| name.cmp(&zone))
        .map_err(|_| {
            format!(
                "`{zone}` is not an IANA time zone; write it like Europe/Paris or America/New_York"
            )
        })?;
    parse(ZONES[i].1).ok_or_else(|| format!("the rule of `{zone}` could not be read"))
}

/// Parses a POSIX TZ string (`std offset [dst [offset] [,start[/time],end[/time]]]`).
fn parse(s: &str) -> Option<Rule> {
    let mut p = s;
    skip_name(&mut p)?;
    let std = -offset(&mut p)?;
    if p.is_empty() {
        return Some(Rule { std, dst: None });
    }
    skip_name(&mut p)?;
    let dst_offset = if p.starts_with(',') || p.is_empty() {
        std + 3600
    } else {
        -offset(&mut p)?
    };
    // Without rules POSIX leaves the changes to the implementation; the tz database
    // always writes them.
    let p = p.strip_prefix(',')?;
    let (start, end) = p.split_once(',')?;
    Some(Rule {
        std,
        dst: Some(Dst {
            offset: dst_offset,
            start: change(start)?,
            end: change(end)?,
        }),
    })
}

fn skip_name(p: &mut &str) -> Option<()> {
    if let Some(rest) = p.strip_prefix('<') {
        let end = rest.find('>')?;
        *p = &rest[end + 1..];
    } else {
        let n = p
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(p.len());
        if n < 3 {
            return None;
        }
        *p = &p[n..];
    }
    Some(())
}

/// `[+-]hh[:mm[:ss]]`, in seconds (POSIX sign: west of UTC is positive).
fn offset(p: &mut &str) -> Option<i32> {
    let n = p
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '+' || c == '-'))
        .unwrap_or(p.len());
    let (text, rest) = p.split_at(n);
    *p = rest;
    hms(text)
}

fn hms(text: &str) -> Option<i32> {
    let (sign, digits) = match text.as_bytes().first()? {
        b'-' => (-1, &text[1..]),
        b'+' => (1, &text[1..]),
        _ => (1, text),
    };
    let mut secs = 0;
    for (i, part) in digits.split(':').enumerate() {
        let v: i32 = part.parse().ok()?;
        secs += v * [3600, 60, 1].get(i)?;
    }
    Some(sign * secs)
}

fn change(s: &str) -> Option<Change> {
    let (day, at) = match s.split_once('/') {
        Some((d, t)) => (d, hms(t)?),
        None => (s, 7200),
    };
    let day = if let Some(m) = day.strip_prefix('M') {
        let mut it = m.split('.').map(|x| x.parse::<u32>().ok());
        Day::Month {
            month: it.next()??,
            week: it.next()??,
            weekday: it.next()??,
        }
    } else if let Some(j) = day.strip_prefix('J') {
        Day::Julian(j.parse().ok()?)
    } else {
        Day::Zero(day.parse().ok()?)
    };
    Some(Change { day, at })
}

/// The local date of a change in `year`.
fn date_of(day: &Day, year: i32) -> Option<NaiveDate> {
    match *day {
        Day::Julian(n) => {
            let jan1 = NaiveDate::from_ymd_opt(year, 1, 1)?;
            let mut d = jan1 + chrono::Days::new(u64::from(n.saturating_sub(1)));
            if jan1.leap_year() && d.ordinal() >= 60 {
                d = d + chrono::Days::new(1);
            }
            Some(d)
        }
        Day::Zero(n) => NaiveDate::from_yo_opt(year, n + 1),
        Day::Month {
            month,
            week,
            weekday,
        } => {
            let first = NaiveDate::from_ymd_opt(year, month, 1)?;
            let shift = (weekday + 7 - first.weekday().num_days_from_sunday()) % 7;
            let mut d = first + chrono::Days::new(u64::from(shift + 7 * (week.max(1) - 1)));
            while d.month() != month {
                d = d - chrono::Days::new(7);
            }
            Some(d)
        }
    }
}

impl Rule {
    /// Seconds east of UTC at the instant `utc` (Unix seconds).
    fn offset_at(&self, utc: i64) -> i32 {
        let Some(dst) = &self.dst else {
            return self.std;
        };
        let year = Utc
            .timestamp_opt(utc + i64::from(self.std), 0)
            .single()
            .map_or(1970, |t| t.year());
        let instant = |c: &Change, offset_before: i32| -> Option<i64> {
            let date = date_of(&c.day, year)?;
            let midnight = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
            Some(midnight + i64::from(c.at) - i64::from(offset_before))
        };
        let (Some(start), Some(end)) =
            (instant(&dst.start, self.std), instant(&dst.end, dst.offset))
        else {
            return self.std;
        };
        let in_dst = if start < end {
            utc >= start && utc < end
        } else {
            // Southern hemisphere: daylight saving spans the new year.
            utc >= start || utc < end
        };
        if in_dst { dst.offset } else { self.std }
    }
}

/// An IANA zone as a chrono [`TimeZone`], by its current rule: what cron schedules fire in
/// and local times are read in. Instants before the zone last changed its rule are read
/// with today's rule (schedules look ahead, so that is what they need).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Zone(Rule);

/// The offset of a [`Zone`] at an instant (it keeps its zone, as chrono requires).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZoneOffset {
    zone: Zone,
    seconds: i32,
}

impl Zone {
    pub const UTC: Zone = Zone(Rule { std: 0, dst: None });

    /// The zone named `name` (`UTC` or an IANA name); the error says how to write one.
    pub fn named(name: &str) -> Result<Self, String> {
        rule_of(name).map(Zone)
    }

    fn at(self, seconds: i32) -> ZoneOffset {
        ZoneOffset {
            zone: self,
            seconds,
        }
    }
}

impl chrono::Offset for ZoneOffset {
    fn fix(&self) -> chrono::FixedOffset {
        chrono::FixedOffset::east_opt(self.seconds)
            .unwrap_or(chrono::FixedOffset::east_opt(0).expect("UTC"))
    }
}

impl TimeZone for Zone {
    type Offset = ZoneOffset;

    fn from_offset(offset: &ZoneOffset) -> Self {
        offset.zone
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> chrono::MappedLocalTime<ZoneOffset> {
        match local.and_hms_opt(0, 0, 0) {
            Some(midnight) => self.offset_from_local_datetime(&midnight),
            None => chrono::MappedLocalTime::None,
        }
    }

    /// The offsets under which `local` is a real instant: none in a spring-forward gap,
    /// two (the earlier instant first) in a fall-back repeat.
    fn offset_from_local_datetime(
        &self,
        local: &NaiveDateTime,
    ) -> chrono::MappedLocalTime<ZoneOffset> {
        let wall = local.and_utc().timestamp();
        let mut fits: Vec<i32> = [Some(self.0.std), self.0.dst.map(|d| d.offset)]
            .into_iter()
            .flatten()
            .filter(|&o| self.0.offset_at(wall - i64::from(o)) == o)
            .collect();
        // A larger offset is an earlier instant for the same wall time.
        fits.sort_by(|a, b| b.cmp(a));
        fits.dedup();
        match fits[..] {
            [] => chrono::MappedLocalTime::None,
            [o] => chrono::MappedLocalTime::Single(self.at(o)),
            [a, b, ..] => chrono::MappedLocalTime::Ambiguous(self.at(a), self.at(b)),
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> ZoneOffset {
        let t = utc
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| t.and_utc().timestamp());
        self.at(self.0.offset_at(t))
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> ZoneOffset {
        self.at(self.0.offset_at(utc.and_utc().timestamp()))
    }
}

/// An instant from a template value: an RFC 3339 string, or Unix milliseconds (Kafka's
/// `timestamp`).
pub fn instant(value: &serde_json::Value) -> Result<i64, BadTime> {
    match value {
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(|ms| ms.div_euclid(1000))
            .ok_or_else(|| BadTime(format!("{n} is not a time in milliseconds"))),
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp())
            .map_err(|e| BadTime(format!("`{s}` is not an RFC 3339 time ({e})"))),
        other => Err(BadTime(format!(
            "{other} is not a time: give an RFC 3339 string or Unix milliseconds"
        ))),
    }
}

/// The local date and time of `utc` (Unix seconds) in `zone`.
pub fn local(utc: i64, zone: &str) -> Result<NaiveDateTime, BadTime> {
    let rule = rule_of(zone)?;
    let at = utc + i64::from(rule.offset_at(utc));
    Utc.timestamp_opt(at, 0)
        .single()
        .map(|t| t.naive_utc())
        .ok_or_else(|| BadTime(format!("{utc} is out of range")))
}

/// `monday` … `sunday`.
pub fn weekday_name(t: &NaiveDateTime) -> &'static str {
    match t.weekday() {
        Weekday::Mon => "monday",
        Weekday::Tue => "tuesday",
        Weekday::Wed => "wednesday",
        Weekday::Thu => "thursday",
        Weekday::Fri => "friday",
        Weekday::Sat => "saturday",
        Weekday::Sun => "sunday",
    }
}

/// Whether the local time of day is in `[from, to)` (`HH:MM`); a window with `to` before
/// `from` spans midnight.
pub fn in_window(t: &NaiveDateTime, from: &str, to: &str) -> Result<bool, BadTime> {
    let parse = |s: &str| -> Result<u32, String> {
        let (h, m) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not a time of day like 09:30"))?;
        let (h, m): (u32, u32) = (
            h.parse()
                .map_err(|_| format!("`{s}` is not a time of day like 09:30"))?,
            m.parse()
                .map_err(|_| format!("`{s}` is not a time of day like 09:30"))?,
        );
        if h > 24 || m > 59 {
            return Err(format!("`{s}` is not a time of day like 09:30"));
        }
        Ok(h * 60 + m)
    };
    let (a, b) = (parse(from)?, parse(to)?);
    let now = t.hour() * 60 + t.minute();
    Ok(if a <= b {
        now >= a && now < b
    } else {
        now >= a || now < b
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("time")
            .timestamp()
    }

    fn local_str(s: &str, zone: &str) -> String {
        local(at(s), zone)
            .expect("local")
            .format("%Y-%m-%d %H:%M")
            .to_string()
    }

    #[test]
    fn rules_are_read_from_the_tz_strings() {
        assert_eq!(
            parse("CET-1CEST,M3.5.0,M10.5.0/3"),
            Some(Rule {
                std: 3600,
                dst: Some(Dst {
                    offset: 7200,
                    start: Change {
                        day: Day::Month {
                            month: 3,
                            week: 5,
                            weekday: 0
                        },
                        at: 7200
                    },
                    end: Change {
                        day: Day::Month {
                            month: 10,
                            week: 5,
                            weekday: 0
                        },
                        at: 10800
                    },
                }),
            })
        );
        assert_eq!(
            parse("IST-5:30"),
            Some(Rule {
                std: 19800,
                dst: None
            })
        );
        assert_eq!(
            parse("<-03>3"),
            Some(Rule {
                std: -10800,
                dst: None
            })
        );
        assert!(rule_of("Europe/Pariss").is_err());
        assert_eq!(
            ZONES.len(),
            ZONES.iter().filter(|(_, r)| parse(r).is_some()).count(),
            "every zone's rule parses"
        );
    }

    #[test]
    fn local_times_follow_daylight_saving_in_both_hemispheres() {
        // Paris: CET until 2026-03-29 01:00 UTC, then CEST until 2026-10-25 01:00 UTC.
        assert_eq!(
            local_str("2026-03-29T00:59:00Z", "Europe/Paris"),
            "2026-03-29 01:59"
        );
        assert_eq!(
            local_str("2026-03-29T01:00:00Z", "Europe/Paris"),
            "2026-03-29 03:00"
        );
        assert_eq!(
            local_str("2026-10-25T00:59:00Z", "Europe/Paris"),
            "2026-10-25 02:59"
        );
        assert_eq!(
            local_str("2026-10-25T01:00:00Z", "Europe/Paris"),
            "2026-10-25 02:00"
        );
        // New York: EST → EDT on 2026-03-08 at 07:00 UTC, back on 2026-11-01 at 06:00 UTC.
        assert_eq!(
            local_str("2026-03-08T06:59:00Z", "America/New_York"),
            "2026-03-08 01:59"
        );
        assert_eq!(
            local_str("2026-03-08T07:00:00Z", "America/New_York"),
            "2026-03-08 03:00"
        );
        assert_eq!(
            local_str("2026-11-01T06:00:00Z", "America/New_York"),
            "2026-11-01 01:00"
        );
        // Sydney: AEDT (+11) in January, AEST (+10) in July.
        assert_eq!(
            local_str("2026-01-15T00:00:00Z", "Australia/Sydney"),
            "2026-01-15 11:00"
        );
        assert_eq!(
            local_str("2026-07-15T00:00:00Z", "Australia/Sydney"),
            "2026-07-15 10:00"
        );
        assert_eq!(
            local_str("2026-07-15T00:00:00Z", "Asia/Kolkata"),
            "2026-07-15 05:30"
        );
        assert_eq!(local_str("2026-07-15T00:00:00Z", "UTC"), "2026-07-15 00:00");
    }

    #[test]
    fn every_zone_agrees_with_the_full_database_through_2026() {
        // chrono-tz carries the whole tz database (the cron schedules use it): at every
        // 6 hours of 2026, both must give each zone the same local time.
        use chrono_tz::Tz;
        let mut differ = Vec::new();
        for (name, _) in ZONES {
            let Ok(tz) = name.parse::<Tz>() else { continue };
            let mut t = at("2026-01-01T00:00:00Z");
            while t < at("2027-01-01T00:00:00Z") {
                let want = Utc
                    .timestamp_opt(t, 0)
                    .unwrap()
                    .with_timezone(&tz)
                    .naive_local();
                if local(t, name).ok() != Some(want) {
                    differ.push(format!("{name} at {t}"));
                    break;
                }
                t += 6 * 3600;
            }
        }
        // Morocco's zones leave +01 for Ramadan each year, by dates set year by year: no
        // rule can say it, so only the full database knows.
        differ
            .retain(|d| !d.starts_with("Africa/Casablanca ") && !d.starts_with("Africa/El_Aaiun "));
        assert!(
            differ.is_empty(),
            "{} zones differ: {differ:?}",
            differ.len()
        );
    }

    #[test]
    fn windows_and_weekdays() {
        let t = local(at("2026-03-02T07:30:00Z"), "Europe/Paris").expect("local");
        assert_eq!(weekday_name(&t), "monday");
        assert!(in_window(&t, "08:00", "17:00").expect("window"));
        assert!(!in_window(&t, "09:00", "17:00").expect("window"));
        assert!(in_window(&t, "22:00", "09:00").expect("window across midnight"));
        assert!(in_window(&t, "9am", "5pm").is_err());
    }
}
