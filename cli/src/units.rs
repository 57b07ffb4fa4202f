//! Parsing of durations (`10m`, `1h30m`, `2d`) and sizes (`500M`, `2GiB`).

use std::time::Duration;

/// A duration in jiff's friendly or ISO 8601 format; a day counts as 24 hours.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let span: jiff::Span =
        text.parse().map_err(|e| format!("cannot read {text:?} as a duration (like 10m, 1h30m, 2d): {e}"))?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("cannot use {text:?} as a duration: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{text:?} is negative"))
}

/// A size: a number with an optional unit. K, M, G, T (and KiB, MiB, ...) are powers of 1024;
/// KB, MB, GB, TB are powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("cannot read {text:?} as a size (like 500M, 2G)"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    Ok((value * factor) as u64)
}

/// `bytes` as [`parse_size`] reads it back exactly, in the largest binary unit that divides
/// it: 16 MiB is `16M`.
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Whole seconds as [`parse_duration`] reads them back, in the largest unit that divides them:
/// 600 s is `10m`. What is below a second is dropped (no default has any).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs != 0 && secs.is_multiple_of(len) {
            return format!("{}{unit}", secs / len);
        }
    }
    format!("{secs}s")
}

/// An age as a person reads it: the two largest units, rounded down (`63d 3h`, `2h 5m`,
/// `40s`). Not [`format_duration`]: that one is exact so that a default reads back, and an age
/// of 5457151 s would come out as `5457151s`.
pub fn format_age(d: Duration) -> String {
    let secs = d.as_secs();
    let units = [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)];
    let Some(top) = units.iter().position(|&(_, len)| secs >= len) else {
        return "0s".to_owned();
    };
    let (unit, len) = units[top];
    let mut text = format!("{}{unit}", secs / len);
    if let Some(&(next, next_len)) = units.get(top + 1) {
        let rest = secs % len / next_len;
        if rest != 0 {
            text.push_str(&format!(" {rest}{next}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(2 * 86400));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("3MB").unwrap(), 3_000_000);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn formatted_sizes_and_durations_read_back() {
        assert_eq!(format_size(16 << 20), "16M");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(0), "0");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_age(Duration::from_secs(5_457_151)), "63d 3h");
        assert_eq!(format_age(Duration::from_secs(7_500)), "2h 5m");
        assert_eq!(format_age(Duration::from_secs(7_200)), "2h");
        assert_eq!(format_age(Duration::from_secs(40)), "40s");
        assert_eq!(format_age(Duration::from_secs(61)), "1m 1s");
        assert_eq!(format_age(Duration::from_secs(0)), "0s");
        for bytes in [0, 1, 1024, 64 << 10, 16 << 20, 3 << 30, 5 << 40, (1 << 20) + 1] {
            assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }
        for secs in [0, 1, 59, 60, 3600, 5400, 86_400, 2 * 86_400 + 1] {
            assert_eq!(parse_duration(&format_duration(Duration::from_secs(secs))).unwrap(), Duration::from_secs(secs));
        }
    }
}
