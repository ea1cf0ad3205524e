//! Parsers for the value syntaxes shared by env vars and options: sizes, durations,
//! percentages, growth and rates. Pure functions; every input either parses or returns
//! an `Err` with a short description of what was expected.

/// Size units, longest first so `MiB` wins over `M`-anything.
const SIZE_UNITS: &[(&str, f64)] = &[
    ("kib", 1024.0),
    ("mib", 1024.0 * 1024.0),
    ("gib", 1024.0 * 1024.0 * 1024.0),
    ("tib", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("ki", 1024.0),
    ("mi", 1024.0 * 1024.0),
    ("gi", 1024.0 * 1024.0 * 1024.0),
    ("ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("kb", 1e3),
    ("mb", 1e6),
    ("gb", 1e9),
    ("tb", 1e12),
    ("b", 1.0),
];

const DURATION_UNITS: &[(&str, f64)] = &[
    ("ms", 1.0),
    ("s", 1000.0),
    ("m", 60_000.0),
    ("min", 60_000.0),
    ("h", 3_600_000.0),
    ("d", 86_400_000.0),
];

pub const SIZE_ACCEPTS: &str =
    "a size such as 768MiB, 1.5GB or 536870912 (bytes; units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)";
pub const DURATION_ACCEPTS: &str =
    "a duration such as 250ms, 30s, 10m, 6h or 1500 (milliseconds; units ms, s, m, h, d) of at most 24d (2147483647 ms)";

/// The longest duration any setting takes: JS timers (setTimeout, setInterval) fire at once
/// for a delay of 2^31 ms or more, so no setting may reach it. One rule for every duration.
pub const MAX_DURATION_MS: u64 = (1 << 31) - 1;

/// Splits `"1.5GiB"` into `(1.5, "gib")`. The number must be finite and non-negative.
fn split_number(text: &str) -> Option<(f64, String)> {
    let text = text.trim();
    let end = text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    Some((value, unit.trim().to_ascii_lowercase()))
}

fn to_u64(value: f64) -> Option<u64> {
    if (0.0..1.8e19).contains(&value) {
        Some(value.round() as u64)
    } else {
        None
    }
}

/// A number with an optional unit from `units` (no unit: factor 1), as a whole count.
fn parse_scaled(text: &str, units: &[(&str, f64)], accepts: &str) -> Result<u64, String> {
    let (value, unit) = split_number(text).ok_or_else(|| accepts.to_string())?;
    let factor = if unit.is_empty() {
        1.0
    } else {
        units
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("{accepts}; unknown unit '{unit}'"))?
    };
    to_u64(value * factor).ok_or_else(|| accepts.to_string())
}

/// `768MiB`, `1.5GB`, `536870912` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_scaled(text, SIZE_UNITS, SIZE_ACCEPTS)
}

/// `250ms`, `30s`, `10m`, `6h`, `1d`, `1500` (milliseconds), at most `MAX_DURATION_MS`.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    match parse_scaled(text, DURATION_UNITS, DURATION_ACCEPTS)? {
        ms if ms > MAX_DURATION_MS => Err(DURATION_ACCEPTS.to_string()),
        ms => Ok(ms),
    }
}

/// `80%` -> 0.8. Accepts `0 < p <= max_percent`.
pub fn parse_percent(text: &str, max_percent: f64) -> Result<f64, String> {
    let accepts = format!("a percentage above 0% and at most {max_percent}% such as 80%");
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').ok_or_else(|| accepts.clone())?;
    let (value, unit) = split_number(number).ok_or_else(|| accepts.clone())?;
    if !unit.is_empty() || value <= 0.0 || value > max_percent {
        return Err(accepts);
    }
    Ok(value / 100.0)
}

pub fn is_percent(text: &str) -> bool {
    text.trim().ends_with('%')
}

/// Size limit given either as bytes or as a fraction of some reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Bytes(u64),
    Fraction(f64),
}

impl Limit {
    /// Resolves against the reference (e.g. the cgroup limit); `None` if there is none.
    pub fn resolve(self, reference: Option<u64>) -> Option<u64> {
        match self {
            Limit::Bytes(bytes) => Some(bytes),
            Limit::Fraction(fraction) => reference.map(|r| (r as f64 * fraction) as u64),
        }
    }
}

/// A size or a percentage (`768MiB` or `90%`). A zero size is refused: it would recycle at once.
pub fn parse_limit(text: &str, max_percent: f64) -> Result<Limit, String> {
    let accepts = || {
        format!("{SIZE_ACCEPTS}, or a percentage above 0% and at most {max_percent}% (e.g. 80%)")
    };
    if is_percent(text) {
        parse_percent(text, max_percent)
            .map(Limit::Fraction)
            .map_err(|_| accepts())
    } else {
        match parse_size(text) {
            Ok(0) | Err(_) => Err(accepts()),
            Ok(bytes) => Ok(Limit::Bytes(bytes)),
        }
    }
}

/// Growth over the baseline RSS: `+300MiB` or `2x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Growth {
    Plus(u64),
    Factor(f64),
}

impl Growth {
    pub fn limit_over(self, baseline: u64) -> u64 {
        match self {
            Growth::Plus(bytes) => baseline.saturating_add(bytes),
            Growth::Factor(factor) => (baseline as f64 * factor) as u64,
        }
    }
}

pub fn parse_growth(text: &str) -> Result<Growth, String> {
    const ACCEPTS: &str =
        "growth over the baseline: +SIZE such as +300MiB, or a factor above 1 such as 2x or 1.5x";
    let trimmed = text.trim();
    if let Some(size) = trimmed.strip_prefix('+') {
        return match parse_size(size) {
            Ok(bytes) if bytes > 0 => Ok(Growth::Plus(bytes)),
            _ => Err(ACCEPTS.to_string()),
        };
    }
    let factor = trimmed
        .strip_suffix('x')
        .or_else(|| trimmed.strip_suffix('X'))
        .ok_or_else(|| ACCEPTS.to_string())?;
    match split_number(factor) {
        Some((value, unit)) if unit.is_empty() && value > 1.0 => Ok(Growth::Factor(value)),
        _ => Err(ACCEPTS.to_string()),
    }
}

/// `10MiB/min` -> bytes per minute.
pub fn parse_rate_per_min(text: &str) -> Result<f64, String> {
    const ACCEPTS: &str = "a rate SIZE/TIME such as 10MiB/min, 500KiB/s or 1GB/h";
    let (size, per) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| ACCEPTS.to_string())?;
    let bytes = parse_size(size).map_err(|_| ACCEPTS.to_string())?;
    let per_ms = match per.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" | "hour" => 3_600_000.0,
        _ => return Err(ACCEPTS.to_string()),
    };
    if bytes == 0 {
        return Err(ACCEPTS.to_string());
    }
    Ok(bytes as f64 * 60_000.0 / per_ms)
}

pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Ok(true),
        "0" | "off" | "false" | "no" | "" => Ok(false),
        _ => Err("one of on, off, 1, 0, true, false, yes, no".to_string()),
    }
}

/// Human size for messages: `774 MiB`, `1.5 GiB`, `512 KiB`.
pub fn format_size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.1} GiB", b / (1024.0 * MIB))
    } else if b >= MIB {
        format!("{:.0} MiB", b / MIB)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

pub fn format_duration(ms: u64) -> String {
    if ms >= 3_600_000 && ms.is_multiple_of(60_000) {
        format!("{:.1}h", ms as f64 / 3_600_000.0)
    } else if ms >= 60_000 && ms.is_multiple_of(1000) {
        format!("{:.1}m", ms as f64 / 60_000.0)
    } else if ms >= 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("768MiB"), Ok(768 * 1024 * 1024));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("1.5 gib"), Ok(1_610_612_736));
        assert_eq!(parse_size("536870912"), Ok(536_870_912));
        assert_eq!(parse_size("100Mi"), Ok(100 * 1024 * 1024));
        assert!(parse_size("banana").is_err());
        assert!(parse_size("-5MB").is_err());
        assert!(parse_size("5QB").unwrap_err().contains("unknown unit 'qb'"));
        assert!(parse_size("").is_err());
        assert!(parse_size(".5MB").is_err());
        assert!(parse_size("1e9").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("6h"), Ok(21_600_000));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("1500"), Ok(1500));
        assert!(parse_duration_ms("-5s").is_err());
        assert!(parse_duration_ms("5 fortnights").is_err());
        assert_eq!(parse_duration_ms("24d"), Ok(2_073_600_000));
        assert_eq!(parse_duration_ms("2147483647"), Ok(MAX_DURATION_MS));
        assert!(parse_duration_ms("2147483648").is_err());
        assert!(parse_duration_ms("25d")
            .unwrap_err()
            .contains("at most 24d"));
    }

    #[test]
    fn percents_and_limits() {
        assert_eq!(parse_percent("80%", 100.0), Ok(0.8));
        assert!(parse_percent("150%", 100.0).is_err());
        assert!(parse_percent("0%", 100.0).is_err());
        assert_eq!(parse_limit("90%", 100.0), Ok(Limit::Fraction(0.9)));
        assert_eq!(parse_limit("1KiB", 100.0), Ok(Limit::Bytes(1024)));
        assert!(parse_limit("0", 100.0).is_err());
        assert_eq!(Limit::Fraction(0.5).resolve(Some(1000)), Some(500));
        assert_eq!(Limit::Fraction(0.5).resolve(None), None);
    }

    #[test]
    fn growth_and_rates() {
        assert_eq!(parse_growth("+300MiB"), Ok(Growth::Plus(300 << 20)));
        assert_eq!(parse_growth("2x"), Ok(Growth::Factor(2.0)));
        assert!(parse_growth("0.5x").is_err());
        assert!(parse_growth("300MiB").is_err());
        assert_eq!(Growth::Factor(2.0).limit_over(100), 200);
        assert_eq!(parse_rate_per_min("10MiB/min"), Ok(10.0 * 1048576.0));
        assert_eq!(parse_rate_per_min("1KiB/s"), Ok(60.0 * 1024.0));
        assert!(parse_rate_per_min("10MiB").is_err());
    }

    #[test]
    fn every_size_unit() {
        const K: u64 = 1024;
        for (text, bytes) in [
            ("2KiB", 2 * K),
            ("2MiB", 2 * K * K),
            ("2GiB", 2 * K * K * K),
            ("2TiB", 2 * K * K * K * K),
            ("2Ki", 2 * K),
            ("2Mi", 2 * K * K),
            ("2Gi", 2 * K * K * K),
            ("2Ti", 2 * K * K * K * K),
            ("2KB", 2_000),
            ("2MB", 2_000_000),
            ("2GB", 2_000_000_000),
            ("2TB", 2_000_000_000_000),
            ("2B", 2),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn boundaries_of_percent_growth_rates_and_switches() {
        assert_eq!(parse_percent("100%", 100.0), Ok(1.0));
        assert!(parse_percent("100.5%", 100.0).is_err());
        assert!(parse_growth("+0MiB").is_err());
        assert!(parse_growth("1x").is_err());
        assert_eq!(parse_growth("1.5x"), Ok(Growth::Factor(1.5)));
        assert_eq!(parse_rate_per_min("60MiB/h"), Ok(1048576.0));
        assert_eq!(parse_rate_per_min("1MiB/hour"), Ok(1048576.0 / 60.0));
        assert_eq!(parse_bool("off"), Ok(false));
        assert_eq!(parse_bool("no"), Ok(false));
        assert_eq!(parse_bool("yes"), Ok(true));
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(3_600_000), "1.0h");
        assert_eq!(format_duration(5_400_000), "1.5h");
        assert_eq!(format_duration(90_000), "1.5m");
        assert_eq!(format_duration(120_000), "2.0m");
        assert_eq!(format_duration(61_500), "61.5s");
        assert_eq!(format_duration(59_999), "60.0s");
        assert_eq!(format_size(774 << 20), "774 MiB");
        assert_eq!(format_size(3 << 30), "3.0 GiB");
        assert_eq!(format_duration(30_000), "30.0s");
        assert_eq!(format_duration(250), "250ms");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in ".{0,40}") {
            let _ = parse_size(&text);
            let _ = parse_duration_ms(&text);
            let _ = parse_percent(&text, 100.0);
            let _ = parse_limit(&text, 100.0);
            let _ = parse_growth(&text);
            let _ = parse_rate_per_min(&text);
            let _ = parse_bool(&text);
        }

        #[test]
        fn sizes_round_trip(n in 0u64..(1u64 << 50)) {
            prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
            prop_assert_eq!(parse_size(&format!("{n}KiB")), Ok(n * 1024));
        }

        #[test]
        fn durations_round_trip(n in 0u64..=MAX_DURATION_MS) {
            prop_assert_eq!(parse_duration_ms(&format!("{n}ms")), Ok(n));
            prop_assert_eq!(parse_duration_ms(&format!("{}s", n / 1000)), Ok(n / 1000 * 1000));
        }
    }
}
