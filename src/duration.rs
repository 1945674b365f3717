//! Lease and wait durations as people write them: `900`, `300s`, `15m`,
//! `3 minutes`, `100hrs`, `1 day`, `2 hours`, `1h 30m`.
//!
//! A bare number is seconds, as in awsflock 0.2.0. Everything else goes to
//! `humantime`, which knows the unit spellings 0.2.0 accepted and more,
//! except a lone capital `M`: humantime reads `5M` as five months, which a
//! user of `sleep 5m` or `timeout 5m` never means, so it is refused with the
//! two spellings that are not ambiguous.
//!
//! Every duration is at most [`MAX`] (366 days): a year's lease fits the
//! table's whole-second numbers, JSON and millisecond `i64` arithmetic with
//! room to spare, and anything longer is a typo or a wish for "forever",
//! which `release` (leases) and `--wait-time 0` (waits) already express.

use std::time::Duration;

/// The longest lease or wait accepted: 366 days (so `1 year`, which
/// humantime counts as 365.25 days, fits).
pub const MAX: Duration = Duration::from_secs(366 * 86_400);

/// The bounds, as `--help` and the error messages state them.
pub const BOUNDS: &str = "at most 366 days";

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
    let d = parse_any(text).map_err(|e| match e {
        Refused::TooLong(m) => format!("{m}; 0 waits forever"),
        Refused::Bad(m) => m,
    })?;
    Ok(if d.is_zero() { None } else { Some(d) })
}

/// Why a duration was refused, before it becomes a message.
enum Refused {
    /// Longer than [`MAX`].
    TooLong(String),
    /// Anything else.
    Bad(String),
}

impl From<Refused> for String {
    fn from(r: Refused) -> String {
        match r {
            Refused::TooLong(m) | Refused::Bad(m) => m,
        }
    }
}

/// `2.5`: seconds with a fraction, as flock(1)'s `-w` takes them. `None`
/// when `t` is not of that form; `Some(None)` when it is too large.
fn decimal_seconds(t: &str) -> Option<Option<Duration>> {
    let (whole, frac) = t.split_once('.')?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
        return None;
    }
    Some(
        t.parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
    )
}

fn parse_any(text: &str) -> Result<Duration, Refused> {
    let d = parse_unbounded(text)?;
    if d > MAX {
        return Err(Refused::TooLong(format!(
            "duration {text:?} is too long: {BOUNDS} is allowed"
        )));
    }
    Ok(d)
}

fn parse_unbounded(text: &str) -> Result<Duration, Refused> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Refused::Bad(
            "empty duration; give seconds ('900') or a form like '15m' or '2 hours'".into(),
        ));
    }
    if t.starts_with('-') {
        return Err(Refused::Bad(format!(
            "duration {text:?} is negative; give a positive duration like '15m'"
        )));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map(Duration::from_secs).map_err(|_| {
            Refused::TooLong(format!(
                "duration {text:?} is too long: {BOUNDS} is allowed"
            ))
        });
    }
    if let Some(d) = decimal_seconds(t) {
        return d.ok_or_else(|| {
            Refused::TooLong(format!(
                "duration {text:?} is too long: {BOUNDS} is allowed"
            ))
        });
    }
    if let Some(n) = lone_capital_m(t) {
        return Err(Refused::Bad(format!(
            "duration {text:?} is ambiguous: write '{n}m' for minutes or '{n} months'"
        )));
    }
    humantime::parse_duration(t).map_err(|e| {
        Refused::Bad(format!("cannot read duration {text:?} ({e}); give seconds ('900') or a form like '15m', '3 minutes', '1h 30m'"))
    })
}

/// The number before a unit written as a lone capital `M`, if there is one.
fn lone_capital_m(t: &str) -> Option<&str> {
    let mut number_start = None;
    let mut number = "";
    let bytes = t.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() || b == b'.' {
            let start = *number_start.get_or_insert(i);
            number = &t[start..=i];
        } else if b.is_ascii_alphabetic() {
            let end = t[i..]
                .find(|c: char| !c.is_ascii_alphabetic())
                .map_or(t.len(), |e| i + e);
            if &t[i..end] == "M" {
                return Some(number);
            }
            number_start = None;
            i = end;
            continue;
        } else if b != b' ' {
            number_start = None;
        }
        i += 1;
    }
    None
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
            "367 days",
            "1000000 years",
            "18446744073709551615",
            "5M",
            "1h 5M",
        ] {
            assert!(parse_seconds(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn bounds_are_inclusive_and_capital_m_is_named() {
        assert_eq!(parse_seconds("366 days"), Ok(MAX));
        assert_eq!(parse_seconds("1 year").map(|d| d.as_secs()), Ok(31_557_600));
        assert!(
            parse_wait("18446744073709551615")
                .unwrap_err()
                .contains(BOUNDS)
        );
        assert!(parse_positive("9000 years").unwrap_err().contains(BOUNDS));
        // Only a wait that is too long is told that 0 waits forever.
        assert!(
            parse_wait("367 days")
                .unwrap_err()
                .ends_with("; 0 waits forever")
        );
        assert!(
            parse_wait("18446744073709551615")
                .unwrap_err()
                .ends_with("; 0 waits forever")
        );
        assert!(
            !parse_wait("5 parsecs")
                .unwrap_err()
                .contains("waits forever")
        );
        let e = parse_seconds("5M").unwrap_err();
        assert!(e.contains("'5m'") && e.contains("'5 months'"), "{e}");
        assert_eq!(parse_seconds("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(
            parse_seconds("2 months").map(|d| d > Duration::ZERO),
            Ok(true)
        );
        assert_eq!(parse_positive("5ms"), Ok(Duration::from_millis(5)));
    }

    #[test]
    fn wait_zero_means_forever() {
        assert_eq!(parse_wait("0"), Ok(None));
        assert_eq!(parse_wait("60"), Ok(Some(Duration::from_secs(60))));
        assert!(parse_wait("-1").is_err());
        // Fractions of a second, as flock(1)'s -w takes them.
        assert_eq!(parse_wait("2.5"), Ok(Some(Duration::from_millis(2500))));
        assert_eq!(parse_wait(".5"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(parse_wait("0.0"), Ok(None));
        assert!(parse_wait("1e400").is_err());
        assert!(parse_wait(".").is_err());
        assert!(parse_wait("99999999999.5").unwrap_err().contains(BOUNDS));
    }

    #[test]
    fn short_format() {
        assert_eq!(short(Duration::from_secs(7080)), "1h58m");
        assert_eq!(short(Duration::from_secs(42)), "42s");
        assert_eq!(short(Duration::from_millis(350)), "350ms");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// No text makes a parser panic, and what they accept is in bounds.
        #[test]
        fn any_text_is_parsed_or_refused_in_bounds(text in "\\PC{0,40}") {
            for d in [parse_seconds(&text).ok(), parse_positive(&text).ok()].into_iter().flatten() {
                prop_assert!(d > Duration::ZERO && d <= MAX);
            }
            if let Ok(Some(d)) = parse_wait(&text) {
                prop_assert!(d <= MAX);
            }
        }

        /// Text shaped like a duration: digits and unit spellings.
        #[test]
        fn duration_like_text_never_panics(
            parts in proptest::collection::vec(
                ("[0-9]{1,25}", prop_oneof![
                    Just(""), Just("s"), Just("m"), Just("M"), Just("h"), Just("d"),
                    Just("ms"), Just("w"), Just(" years"), Just("months"), Just("y"),
                ]),
                1..4,
            )
        ) {
            let text: Vec<String> = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
            let text = text.join(" ");
            let _ = parse_seconds(&text);
            let _ = parse_wait(&text);
            let _ = parse_positive(&text);
        }

        /// Every whole number of seconds in bounds round-trips, in both forms.
        #[test]
        fn seconds_in_bounds_round_trip(n in 1u64..=MAX.as_secs()) {
            prop_assert_eq!(parse_seconds(&n.to_string()), Ok(Duration::from_secs(n)));
            prop_assert_eq!(parse_seconds(&format!("{n}s")), Ok(Duration::from_secs(n)));
            let _ = short(Duration::from_secs(n));
        }
    }
}
