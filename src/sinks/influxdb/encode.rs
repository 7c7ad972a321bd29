//! The InfluxDB line protocol, pure: escaping and one line per reading.
//!
//! ```text
//! reading,hazard_source=HS-1,kind=ch4,point=CH4-T1-1201 value=0.42,quality="good" 1700000000000
//! ```
//!
//! Escaping, per the line protocol reference:
//! - measurement: `,` and space are backslash-escaped;
//! - tag keys, tag values and field keys: `,`, `=` and space are backslash-escaped;
//! - string field values: `"` and `\` are backslash-escaped, and the value is quoted.
//!
//! The protocol cannot carry a newline inside any element, and one point per line is
//! what the quarantine's line numbers rely on, so a newline (or carriage return) is
//! written as the two characters `\n` (`\r`). A backslash in a measurement, key or tag
//! value is written as is, except that one ending the element is doubled so it cannot
//! escape the delimiter after it. Tags with an empty value are left out (the protocol
//! forbids them); tags are sorted by key, as InfluxDB recommends. A non-finite value
//! has no `value` field: the line carries `quality` only. Timestamps are milliseconds
//! (`precision=ms`).

use std::fmt::Write;

fn escape(s: &str, specials: &[char], out: &mut String) {
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' if chars.peek().is_none() => out.push_str("\\\\"),
            c if specials.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

/// Escape a measurement name.
pub fn escape_measurement(s: &str, out: &mut String) {
    escape(s, &[',', ' '], out);
}

/// Escape a tag key, tag value or field key.
pub fn escape_key(s: &str, out: &mut String) {
    escape(s, &[',', '=', ' '], out);
}

/// Write a string field value, quoted and escaped.
pub fn write_string_field(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The series part of a line (`measurement,tag=value,…`), computed once per point.
pub fn series_prefix(measurement: &str, tags: &[(&str, &str)]) -> String {
    let mut tags: Vec<&(&str, &str)> = tags
        .iter()
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect();
    tags.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::with_capacity(64);
    escape_measurement(measurement, &mut out);
    for (k, v) in tags {
        out.push(',');
        escape_key(k, &mut out);
        out.push('=');
        escape_key(v, &mut out);
    }
    out
}

/// Append one reading as a line (with its trailing newline) to `out`.
pub fn write_reading(out: &mut String, prefix: &str, value: f64, quality: &str, ts_ms: i64) {
    out.push_str(prefix);
    out.push(' ');
    if value.is_finite() {
        // `{}` prints the shortest text that reads back as the same f64, never an
        // exponent, and integral values without a dot, which InfluxDB reads as float.
        let _ = write!(out, "value={value},");
    }
    out.push_str("quality=");
    write_string_field(quality, out);
    let _ = writeln!(out, " {ts_ms}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        let mut o = String::new();
        escape_key(s, &mut o);
        o
    }

    #[test]
    fn escapes_per_element() {
        let mut m = String::new();
        escape_measurement("my meas,x=y", &mut m);
        assert_eq!(m, "my\\ meas\\,x=y");
        assert_eq!(key("a b,c=d"), "a\\ b\\,c\\=d");
        assert_eq!(key("line\nbreak"), "line\\nbreak");
        assert_eq!(key("C:\\dir\\"), "C:\\dir\\\\");
        let mut s = String::new();
        write_string_field("say \"hi\" \\ ok\n", &mut s);
        assert_eq!(s, "\"say \\\"hi\\\" \\\\ ok\\n\"");
    }

    #[test]
    fn line_layout() {
        let p = series_prefix(
            "reading",
            &[("point", "CH4 T1"), ("kind", "ch4"), ("site", "")],
        );
        assert_eq!(p, "reading,kind=ch4,point=CH4\\ T1");
        let mut out = String::new();
        write_reading(&mut out, &p, 1.0, "good", 1_700_000_000_000);
        write_reading(&mut out, &p, 0.125, "comm_fail", 5);
        write_reading(&mut out, &p, f64::NAN, "bad_data", 6);
        assert_eq!(
            out,
            "reading,kind=ch4,point=CH4\\ T1 value=1,quality=\"good\" 1700000000000\n\
             reading,kind=ch4,point=CH4\\ T1 value=0.125,quality=\"comm_fail\" 5\n\
             reading,kind=ch4,point=CH4\\ T1 quality=\"bad_data\" 6\n"
        );
    }
}
