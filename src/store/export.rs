//! Reading call detail records back out: `hotline cdr export`.
//!
//! Rows of the `cdr` table whose `ended_at` lies in `[since, until)`, in
//! order of `ended_at`, as CSV (a header row, RFC 4180 quoting, CRLF line
//! ends) or JSON lines (one object per row). Every column is printed under
//! its name; times (`*_at`) as RFC 3339 UTC with milliseconds,
//! `late_answer` as true/false, NULL as an empty CSV field or JSON null.
//! A CSV text cell that a spreadsheet would take for a formula starts with
//! a single quote; JSON lines carry every value as stored.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::types::Value;

use super::StoreError;
use super::schema;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the records of {path}: {source}")]
    Query {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot write the export: {0}")]
    Output(#[from] std::io::Error),
}

/// Writes the records of the database at `path` that ended in
/// `[since, until)` (unix ms; `None`: unbounded) to `out`; returns how many.
pub fn export(
    path: &Path,
    since: Option<i64>,
    until: Option<i64>,
    format: Format,
    out: &mut dyn Write,
) -> Result<usize, ExportError> {
    let conn = schema::open_for_reading(path)?;
    let query_err = |source| ExportError::Query {
        path: path.to_path_buf(),
        source,
    };
    let mut stmt = conn
        .prepare(
            "SELECT * FROM cdr
             WHERE (?1 IS NULL OR ended_at >= ?1) AND (?2 IS NULL OR ended_at < ?2)
             ORDER BY ended_at, call_id",
        )
        .map_err(query_err)?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    if format == Format::Csv {
        let header: Vec<String> = columns.iter().map(|c| csv_field(c)).collect();
        write!(out, "{}\r\n", header.join(","))?;
    }
    let mut rows = stmt.query([since, until]).map_err(query_err)?;
    let mut count = 0;
    let mut line = String::new();
    while let Some(row) = rows.next().map_err(query_err)? {
        line.clear();
        for (i, name) in columns.iter().enumerate() {
            let value = shown(name, row.get::<_, Value>(i).map_err(query_err)?);
            match format {
                Format::Csv => {
                    if i > 0 {
                        line.push(',');
                    }
                    line.push_str(&csv_field(&value.csv_text()));
                }
                Format::Json => {
                    line.push(if i == 0 { '{' } else { ',' });
                    line.push_str(&serde_json::Value::from(name.as_str()).to_string());
                    line.push(':');
                    line.push_str(&value.json().to_string());
                }
            }
        }
        match format {
            Format::Csv => line.push_str("\r\n"),
            Format::Json => line.push_str("}\n"),
        }
        out.write_all(line.as_bytes())?;
        count += 1;
    }
    out.flush()?;
    Ok(count)
}

/// A column's value as printed.
enum Shown {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

impl Shown {
    fn text(&self) -> String {
        match self {
            Shown::Null => String::new(),
            Shown::Int(v) => v.to_string(),
            Shown::Real(v) => v.to_string(),
            Shown::Text(v) => v.clone(),
            Shown::Bool(v) => v.to_string(),
        }
    }

    /// The text of a CSV cell: free text that a spreadsheet would take for
    /// a formula is neutralised (numbers stay numbers).
    fn csv_text(&self) -> String {
        match self {
            Shown::Text(v) => neutralise_formula(v),
            other => other.text(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Shown::Null => serde_json::Value::Null,
            Shown::Int(v) => (*v).into(),
            Shown::Real(v) => (*v).into(),
            Shown::Text(v) => v.as_str().into(),
            Shown::Bool(v) => (*v).into(),
        }
    }
}

fn shown(column: &str, value: Value) -> Shown {
    match value {
        Value::Null => Shown::Null,
        Value::Integer(v) if column.ends_with("_at") => Shown::Text(rfc3339_ms(v)),
        Value::Integer(v) if column == "late_answer" => Shown::Bool(v != 0),
        Value::Integer(v) => Shown::Int(v),
        Value::Real(v) => Shown::Real(v),
        Value::Text(v) => Shown::Text(v),
        Value::Blob(bytes) => Shown::Text(hex::encode(bytes)),
    }
}

/// RFC 4180: a field holding a comma, a quote or a line break is quoted,
/// its quotes doubled.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is
/// read as a formula by spreadsheets (CSV injection): such text gets a
/// leading single quote, which makes it plain text there. A signed number
/// (a caller in E.164, `-3`) computes nothing and is left as it is.
pub fn neutralise_formula(text: &str) -> String {
    let signed_number = text.len() > 1
        && text.starts_with(['+', '-'])
        && text[1..].bytes().all(|b| b.is_ascii_digit());
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) && !signed_number {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// Unix ms as `2026-11-23T10:00:00.123Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let mut s = String::with_capacity(24);
            let _ = write!(
                s,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            );
            s
        }
        Err(_) => ms.to_string(),
    }
}

/// Parses a time given on the command line into unix ms: RFC 3339
/// (`2026-11-23T10:00:00Z`, `2026-11-23T12:00:00+02:00`), a date
/// (`2026-11-23`, midnight UTC) or unix seconds (`1795428000`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a time: expected RFC 3339 (2026-11-23T10:00:00Z), a date (2026-11-23, midnight UTC) or unix seconds"
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = text.parse().map_err(|_| bad())?;
        return secs.checked_mul(1000).ok_or_else(bad);
    }
    if let Some(date) = parse_date(text) {
        return Ok(date.midnight().assume_utc().unix_timestamp() * 1000);
    }
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())
}

/// `YYYY-MM-DD`.
fn parse_date(text: &str) -> Option<time::Date> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_in_three_forms() {
        assert_eq!(parse_time("2026-11-23T10:00:00Z"), Ok(1_795_428_000_000));
        assert_eq!(
            parse_time("2026-11-23T12:00:00+02:00"),
            Ok(1_795_428_000_000)
        );
        assert_eq!(
            parse_time("2026-11-23T10:00:00.250Z"),
            Ok(1_795_428_000_250)
        );
        assert_eq!(parse_time("2026-11-23"), Ok(1_795_392_000_000));
        assert_eq!(parse_time("1795428000"), Ok(1_795_428_000_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-11-23 10:00",
            "-5",
            "99999999999999999999",
        ] {
            let err = parse_time(bad).unwrap_err();
            assert!(err.contains("RFC 3339"), "{bad}: {err}");
        }
    }

    #[test]
    fn times_are_printed_as_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(1_795_428_000_250), "2026-11-23T10:00:00.250Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn text_a_spreadsheet_would_run_as_a_formula_is_neutralised() {
        for formula in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1+2",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ] {
            assert_eq!(neutralise_formula(formula), format!("'{formula}"));
        }
        for plain in [
            "",
            "customer called back",
            "1001",
            "2026-11-23T10:00:00.000Z",
            "'quoted",
            "+15550001",
            "-5",
        ] {
            assert_eq!(neutralise_formula(plain), plain);
        }
        assert_eq!(Shown::Int(-5).csv_text(), "-5", "numbers stay numbers");
        assert_eq!(Shown::Text("-5".into()).csv_text(), "-5");
        assert_eq!(Shown::Text("-5-cmd".into()).csv_text(), "'-5-cmd");
    }

    #[test]
    fn csv_fields_are_quoted_as_rfc4180_says() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(
            csv_field("main:greeting>menu"),
            "main:greeting>menu",
            "no quoting needed"
        );
    }
}
