//! Business hours: whether a moment falls within a weekly schedule.
//!
//! A schedule is "always" (24-hour service) or lines such as
//! `mon-fri 08:00-20:00` and `sat 09:00-12:00`, read in a fixed UTC offset, with
//! holiday dates on which it is closed all day.

use time::{Date, Month, OffsetDateTime, UtcOffset, Weekday};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    /// Bit 0 = Monday … bit 6 = Sunday.
    days: u8,
    /// Minutes since local midnight, `start < end <= 1440`.
    start: u16,
    end: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// None: always open.
    windows: Option<Vec<Window>>,
    offset: UtcOffset,
    holidays: Vec<Date>,
}

fn day_index(name: &str) -> Option<u8> {
    Some(match name {
        "mon" => 0,
        "tue" => 1,
        "wed" => 2,
        "thu" => 3,
        "fri" => 4,
        "sat" => 5,
        "sun" => 6,
        _ => return None,
    })
}

fn parse_days(spec: &str) -> Result<u8, String> {
    if spec == "daily" {
        return Ok(0x7f);
    }
    let mut days = 0u8;
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a), day_index(b));
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(format!("`{part}` is not a day range like mon-fri"));
                };
                let mut d = a;
                loop {
                    days |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => {
                let d = day_index(part)
                    .ok_or_else(|| format!("`{part}` is not a day (mon … sun, or daily)"))?;
                days |= 1 << d;
            }
        }
    }
    Ok(days)
}

fn parse_clock(s: &str) -> Result<u16, String> {
    let bad = || format!("`{s}` is not a time like 08:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_offset(s: &str) -> Result<UtcOffset, String> {
    let bad = || format!("`{s}` is not a UTC offset like +08:00");
    if s == "Z" || s == "UTC" {
        return Ok(UtcOffset::UTC);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1i8, &s[1..]),
        Some(b'-') => (-1i8, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i8, i8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    UtcOffset::from_hms(sign * h, sign * m, 0).map_err(|_| bad())
}

fn parse_date(s: &str) -> Result<Date, String> {
    let bad = || format!("`{s}` is not a date like 2026-10-01");
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next(), it.next(), it.next());
    let (Some(y), Some(m), Some(d)) = (y, m, d) else {
        return Err(bad());
    };
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let d: u8 = d.parse().map_err(|_| bad())?;
    let month = Month::try_from(m).map_err(|_| bad())?;
    Date::from_calendar_date(y, month, d).map_err(|_| bad())
}

impl Schedule {
    /// Parses the config form; the error says which part is wrong.
    pub fn parse(
        lines: &[String],
        utc_offset: &str,
        holidays: &[String],
    ) -> Result<Schedule, String> {
        let offset = parse_offset(utc_offset.trim())?;
        let holidays = holidays
            .iter()
            .map(|d| parse_date(d.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if lines
            .iter()
            .any(|l| l.trim().eq_ignore_ascii_case("always"))
        {
            if lines.len() > 1 {
                return Err("\"always\" cannot be combined with other lines".into());
            }
            return Ok(Schedule {
                windows: None,
                offset,
                holidays,
            });
        }
        if lines.is_empty() {
            return Err("is empty: use [\"always\"] for 24-hour service".into());
        }
        let mut windows = Vec::new();
        for line in lines {
            let line = line.trim().to_ascii_lowercase();
            let (days, range) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| format!("`{line}` is not like \"mon-fri 08:00-20:00\""))?;
            let (a, b) = range
                .trim()
                .split_once('-')
                .ok_or_else(|| format!("`{range}` is not a range like 08:00-20:00"))?;
            let (start, end) = (parse_clock(a.trim())?, parse_clock(b.trim())?);
            if start >= end {
                return Err(format!("`{range}` ends before it starts"));
            }
            windows.push(Window {
                days: parse_days(days)?,
                start,
                end,
            });
        }
        Ok(Schedule {
            windows: Some(windows),
            offset,
            holidays,
        })
    }

    /// Always open.
    pub fn always() -> Schedule {
        Schedule {
            windows: None,
            offset: UtcOffset::UTC,
            holidays: Vec::new(),
        }
    }

    /// Whether the service is open at `now`.
    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        let local = now.to_offset(self.offset);
        let Some(windows) = &self.windows else {
            return !self.holidays.contains(&local.date());
        };
        if self.holidays.contains(&local.date()) {
            return false;
        }
        let day = match local.weekday() {
            Weekday::Monday => 0,
            Weekday::Tuesday => 1,
            Weekday::Wednesday => 2,
            Weekday::Thursday => 3,
            Weekday::Friday => 4,
            Weekday::Saturday => 5,
            Weekday::Sunday => 6,
        };
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        windows
            .iter()
            .any(|w| w.days & (1 << day) != 0 && w.start <= minute && minute < w.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    // 2026-11-23 is a Monday; 00:00 UTC that day:
    const MONDAY: i64 = 1_795_392_000;

    fn lines(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn monday_reference_is_a_monday() {
        assert_eq!(at(MONDAY).weekday(), Weekday::Monday);
        assert_eq!(at(MONDAY).hour(), 0);
    }

    #[test]
    fn office_hours_in_a_time_zone() {
        let s = Schedule::parse(&lines(&["mon-fri 08:00-20:00"]), "+08:00", &[]).unwrap();
        // Monday 08:00 in UTC+8 is Monday 00:00 UTC
        assert!(s.is_open(at(MONDAY)));
        assert!(
            !s.is_open(at(MONDAY - 60)),
            "Sunday 23:59 local? no: Monday 07:59"
        );
        assert!(s.is_open(at(MONDAY + 12 * 3600 - 60)), "19:59 local");
        assert!(!s.is_open(at(MONDAY + 12 * 3600)), "20:00 local is closed");
        // Saturday
        assert!(!s.is_open(at(MONDAY + 5 * 86400 + 3 * 3600)));
    }

    #[test]
    fn always_is_open_except_on_holidays() {
        let s = Schedule::parse(&lines(&["always"]), "+00:00", &lines(&["2026-11-23"])).unwrap();
        assert!(!s.is_open(at(MONDAY + 3600)));
        assert!(s.is_open(at(MONDAY + 86400 + 3600)));
        assert!(Schedule::always().is_open(at(MONDAY)));
    }

    #[test]
    fn several_windows_and_wrapping_day_ranges() {
        let s = Schedule::parse(
            &lines(&["sat-sun 10:00-12:00", "wed 00:00-24:00"]),
            "Z",
            &[],
        )
        .unwrap();
        assert!(
            s.is_open(at(MONDAY + 2 * 86400 + 23 * 3600)),
            "Wednesday 23:00"
        );
        assert!(
            s.is_open(at(MONDAY + 6 * 86400 + 11 * 3600)),
            "Sunday 11:00"
        );
        assert!(!s.is_open(at(MONDAY + 11 * 3600)), "Monday 11:00");
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (l, off, hol, needle) in [
            (vec!["mon-fry 08:00-20:00"], "+00:00", vec![], "fry"),
            (vec!["mon 20:00-08:00"], "+00:00", vec![], "ends before"),
            (vec!["mon 25:00-26:00"], "+00:00", vec![], "25:00"),
            (vec!["mon 08:00-20:00"], "+8", vec![], "+8"),
            (vec!["always"], "+00:00", vec!["2026-13-01"], "2026-13-01"),
            (vec![], "+00:00", vec![], "always"),
        ] {
            let err = Schedule::parse(&lines(&l), off, &lines(&hol)).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
