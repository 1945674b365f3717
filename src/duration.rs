//! Lease and wait durations as people write them: `900`, `300s`, `15m`,
//! `3 minutes`, `100hrs`, `1 day`, `2 hours`, `1h 30m`.
//!
//! A bare number is seconds, as in awsflock 0.2.0. Everything else goes to
//! `humantime`, which knows the unit spellings 0.2.0 accepted and more.

use std::time::Duration;

/// Parses a duration of at least one second.
///
/// Lease durations are stored in whole seconds (the table format has an integer
/// `lease_duration`), so a sub-second part is refused rather than rounded.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let d = parse_any(text)?;
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "duration {text:?} is not a whole number of seconds; use e.g. '90s' or '2m'"
        ));
    }
    if d < Duration::from_secs(1) {
        return Err(format!(
            "duration {text:?} is too short; the minimum is 1 second"
        ));
    }
    Ok(d)
}

/// Parses a duration that may be shorter than a second (`500ms`), but not zero.
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse_any(text)?;
    if d.is_zero() {
        return Err(format!("duration {text:?} must be more than zero"));
    }
    Ok(d)
}

/// Parses a wait time, where `0` means "wait forever" (awsflock 0.2.0's meaning).
/// Returns `None` for forever.
pub fn parse_wait(text: &str) -> Result<Option<Duration>, String> {
    let d = parse_any(text)?;
    Ok(if d.is_zero() { None } else { Some(d) })
}

fn parse_any(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err(
            "empty duration; give seconds ('900') or a form like '15m' or '2 hours'".into(),
        );
    }
    if t.starts_with('-') {
        return Err(format!(
            "duration {text:?} is negative; give a positive duration like '15m'"
        ));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration {text:?} is too large"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("cannot read duration {text:?} ({e}); give seconds ('900') or a form like '15m', '3 minutes', '1h 30m'")
    })
}

/// Formats a duration compactly for people: `1h58m`, `42s`, `350ms`.
pub fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{sec}s"),
        (0, _) if sec == 0 => format!("{m}m"),
        (0, _) => format!("{m}m{sec}s"),
        _ if m == 0 => format!("{h}h"),
        _ => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_forms_awsflock_users_write() {
        let cases = [
            ("900", 900),
            ("300s", 300),
            ("15m", 900),
            ("3 minutes", 180),
            ("100hrs", 360_000),
            ("1 day", 86_400),
            ("2 hours", 7_200),
            ("1h 30m", 5_400),
            ("1s", 1),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_seconds(text), Ok(Duration::from_secs(secs)), "{text}");
        }
    }

    #[test]
    fn refuses_zero_negative_subsecond_and_nonsense() {
        for text in [
            "0",
            "-5",
            "abc",
            "",
            "  ",
            "500ms",
            "1.5",
            "5 parsecs",
            "-1m",
        ] {
            assert!(parse_seconds(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn wait_zero_means_forever() {
        assert_eq!(parse_wait("0"), Ok(None));
        assert_eq!(parse_wait("60"), Ok(Some(Duration::from_secs(60))));
        assert!(parse_wait("-1").is_err());
    }

    #[test]
    fn short_format() {
        assert_eq!(short(Duration::from_secs(7080)), "1h58m");
        assert_eq!(short(Duration::from_secs(42)), "42s");
        assert_eq!(short(Duration::from_millis(350)), "350ms");
    }
}
