//! A cron expression in words, for people reading a console: the common shapes are said
//! plainly ("every 15 minutes", "at 09:00 on Monday to Friday"); anything else is said
//! field by field, never guessed.

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// `expression` (5 fields, 6 with seconds first, or a macro) in words; `None` when it is
/// not a cron expression at all.
pub fn describe(expression: &str) -> Option<String> {
    let f = super::cron::fields(expression).ok()?;
    let (seconds, f) = if f.len() == 6 {
        (Some(f[0].as_str()), &f[1..])
    } else {
        (None, &f[..])
    };
    let (minute, hour, dom, month, dow) = (&*f[0], &*f[1], &*f[2], &*f[3], &*f[4]);
    let when = time_of_day(seconds, minute, hour)?;
    let mut days = Vec::new();
    if dom != "*" && dom != "?" {
        days.push(format!(
            "on day {} of the month",
            list(dom, |d| Some(d.into()))
        ));
    }
    if dow != "*" && dow != "?" {
        days.push(format!("on {}", list(dow, weekday)));
    }
    let mut out = when;
    if !days.is_empty() {
        out = format!("{out} {}", days.join(" or "));
    }
    if month != "*" {
        out = format!("{out} in {}", list(month, month_name));
    }
    Some(out)
}

/// The part of the day: "every minute", "every 15 minutes", "at 09:00", "at minute 5 of
/// every hour"; `None` for shapes said field by field instead.
fn time_of_day(seconds: Option<&str>, minute: &str, hour: &str) -> Option<String> {
    let every = |field: &str, unit: &str| -> Option<String> {
        if field == "*" {
            return Some(format!("every {unit}"));
        }
        let n: u32 = field.strip_prefix("*/")?.parse().ok()?;
        Some(if n == 1 {
            format!("every {unit}")
        } else {
            format!("every {n} {unit}s")
        })
    };
    let number = |s: &str| s.parse::<u32>().ok();
    let prefix = match seconds {
        None | Some("0") => String::new(),
        Some(s) => match every(s, "second") {
            Some(e) if minute == "*" && hour == "*" => return Some(e),
            Some(e) => format!("{e}, "),
            None => format!("at second {s}, "),
        },
    };
    let said = match (number(minute), hour) {
        (_, "*") if every(minute, "minute").is_some() => every(minute, "minute")?,
        (Some(m), "*") => format!("at minute {m} of every hour"),
        (Some(m), h) if h.split(',').all(|x| number(x).is_some()) => {
            let times: Vec<String> = h
                .split(',')
                .filter_map(number)
                .map(|h| format!("{h:02}:{m:02}"))
                .collect();
            format!("at {}", join(&times))
        }
        (Some(m), h) if h.starts_with("*/") => {
            format!("at minute {m} of {}", every(h, "hour")?)
        }
        (None, _) if every(minute, "minute").is_some() => {
            format!("{} during hour {hour}", every(minute, "minute")?)
        }
        _ => format!("at minute {minute} of hour {hour}"),
    };
    Some(format!("{prefix}{said}"))
}

/// A list field said item by item (`1-5` as "x to y"); as written when an item is not a
/// plain value or range (`MON#2`, `L`).
fn list(field: &str, name: impl Fn(&str) -> Option<String>) -> String {
    let items: Option<Vec<String>> = field
        .split(',')
        .map(|item| match item.split_once('-') {
            Some((a, b)) => Some(format!("{} to {}", name(a)?, name(b)?)),
            None => name(item),
        })
        .collect();
    items.map_or_else(|| field.to_string(), |i| join(&i))
}

fn weekday(d: &str) -> Option<String> {
    let i = match d.parse::<usize>() {
        Ok(n) => n % 7,
        Err(_) => DAYS.iter().position(|n| n[..3].eq_ignore_ascii_case(d))?,
    };
    Some(DAYS[i].into())
}

fn month_name(m: &str) -> Option<String> {
    let i = match m.parse::<usize>() {
        Ok(n) if (1..=12).contains(&n) => n - 1,
        Ok(_) => return None,
        Err(_) => MONTHS.iter().position(|n| n[..3].eq_ignore_ascii_case(m))?,
    };
    Some(MONTHS[i].into())
}

fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn common_shapes_are_said_plainly() {
        let said = |e: &str| describe(e).unwrap();
        assert_eq!(said("* * * * *"), "every minute");
        assert_eq!(said("*/15 * * * *"), "every 15 minutes");
        assert_eq!(said("5 * * * *"), "at minute 5 of every hour");
        assert_eq!(said("@daily"), "at 00:00");
        assert_eq!(said("0 9 * * MON-FRI"), "at 09:00 on Monday to Friday");
        assert_eq!(
            said("30 8,17 * * *"),
            "at 08:00 and 17:00".replace(":00", ":30")
        );
        assert_eq!(said("0 */6 * * *"), "at minute 0 of every 6 hours");
        assert_eq!(said("0 0 1 * *"), "at 00:00 on day 1 of the month");
        assert_eq!(
            said("0 12 1 jan *"),
            "at 12:00 on day 1 of the month in January"
        );
        assert_eq!(said("*/10 * * * * *"), "every 10 seconds");
        assert_eq!(said("0 0 * * 0,6"), "at 00:00 on Sunday and Saturday");
    }

    #[test]
    fn other_shapes_are_said_field_by_field() {
        assert_eq!(
            describe("5-10 1-3 * * *").unwrap(),
            "at minute 5-10 of hour 1-3"
        );
        assert_eq!(
            describe("0 0 L * *").unwrap(),
            "at 00:00 on day L of the month"
        );
        assert_eq!(describe("not cron"), None);
    }
}
