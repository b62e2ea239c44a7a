//! Instants and durations as the domain sees them: plain values, never read from a clock here.

pub mod calendar;
pub mod cron;
pub mod tz_rules;
pub mod words;

use std::fmt;
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A time, duration, time zone or schedule that could not be read: the message says what
/// is wrong and how to write it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadTime(pub String);

impl From<String> for BadTime {
    fn from(message: String) -> Self {
        BadTime(message)
    }
}

impl From<BadTime> for String {
    fn from(e: BadTime) -> Self {
        e.0
    }
}

impl std::ops::Deref for BadTime {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Milliseconds since the Unix epoch. Serialized as RFC 3339 (UTC, millisecond precision).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn plus(self, d: StdDuration) -> Self {
        Self(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
    pub fn minus(self, d: StdDuration) -> Self {
        Self(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> StdDuration {
        StdDuration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + StdDuration::from_millis(self.0 as u64)
        } else {
            UNIX_EPOCH - StdDuration::from_millis(self.0.unsigned_abs())
        }
    }
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(d.as_millis() as i64),
            Err(e) => Self(-(e.duration().as_millis() as i64)),
        }
    }
    /// An instant as a person writes one: RFC 3339 with its offset
    /// (`2026-12-03T09:00:00+01:00`), or a local date and time (`2026-12-03T09:00`) in the
    /// IANA `zone` given (UTC without one). A local time that a clock change skips is
    /// refused; one it repeats is the earlier.
    pub fn parse_in_zone(s: &str, zone: Option<&str>) -> Result<Self, BadTime> {
        use chrono::TimeZone as _;
        let s = s.trim();
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(Self(t.timestamp_millis()));
        }
        let local = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
            .ok_or_else(|| {
                BadTime(format!(
                    "`{s}` is not a time: write 2026-12-03T09:00:00+01:00, or 2026-12-03T09:00 with a timezone"
                ))
            })?;
        let zone_name = zone.unwrap_or("UTC");
        let tz = calendar::Zone::named(zone_name).map_err(|_| {
            BadTime(format!(
                "`{zone_name}` is not an IANA time zone (e.g. Europe/Paris)"
            ))
        })?;
        tz.from_local_datetime(&local)
            .earliest()
            .map(|t| Self(t.timestamp_millis()))
            .ok_or_else(|| {
                BadTime(format!(
                    "{s} does not exist in {zone_name} (the clocks skip it)"
                ))
            })
    }

    /// Parses RFC 3339 (`2026-11-22T10:00:00Z`, with or without fractional seconds).
    pub fn parse_rfc3339(s: &str) -> Result<Self, BadTime> {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s)
            && t.timestamp_millis() >= 0
        {
            // With an offset (`+01:00`) as well as `Z`.
            return Ok(Self(t.timestamp_millis()));
        }
        humantime::parse_rfc3339_weak(s)
            .map(Self::from_system_time)
            .map_err(|e| {
                BadTime(format!(
                    "`{s}` is not an RFC 3339 time ({e}); write it like 2026-11-22T10:00:00Z"
                ))
            })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.to_system_time())
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// A duration written the human way in definitions: `500ms`, `30s`, `5m`, `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(StdDuration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Self(StdDuration::from_secs(s))
    }
    pub fn std(self) -> StdDuration {
        self.0
    }
    pub fn parse(s: &str) -> Result<Self, BadTime> {
        humantime::parse_duration(s.trim()).map(Self).map_err(|e| {
            BadTime(format!(
                "`{s}` is not a duration ({e}); write it like 500ms, 30s, 5m or 1h 30m"
            ))
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-",
            "description": "An RFC 3339 time from 1970 on, e.g. 2026-12-06T09:00:00Z or 2026-12-06T10:00:00+01:00"
        })
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: 500ms, 30s, 5m, 1h 30m",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Z]+(\\s*[0-9]+\\s*[a-zA-Z]+)*\\s*$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_human_units() {
        assert_eq!(
            Duration::parse("30s").unwrap().0,
            StdDuration::from_secs(30)
        );
        assert_eq!(
            Duration::parse("1h 30m").unwrap().0,
            StdDuration::from_secs(5400)
        );
        assert_eq!(
            Duration::parse("250ms").unwrap().0,
            StdDuration::from_millis(250)
        );
    }

    #[test]
    fn a_bad_duration_names_the_fix() {
        let e = Duration::parse("thirty").unwrap_err();
        assert!(e.contains("500ms, 30s"), "{e}");
    }

    #[test]
    fn timestamps_round_trip_through_rfc3339() {
        let t = Timestamp(1_795_000_000_123);
        let s = t.to_string();
        assert_eq!(Timestamp::parse_rfc3339(&s).unwrap(), t);
        assert!(s.ends_with('Z'));
    }
}
