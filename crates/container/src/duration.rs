//! Go durations (`time.ParseDuration`), as the kubelet's configuration
//! writes them (`"1m30s"`, `"300ms"`).

use std::time::Duration;

use crate::Error;

/// Parses a Go duration (`time.ParseDuration`): `300ms`, `1m30s`, `1.5h`,
/// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`. Negative durations are an
/// error here (no caller accepts them).
pub fn parse_go_duration(s: &str) -> Result<Duration, Error> {
    let bad = |why: &str| Error::InvalidDuration {
        value: s.to_owned(),
        reason: why.to_owned(),
    };
    let mut rest = s.trim();
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if let Some(neg) = rest.strip_prefix('-') {
        if !neg.is_empty()
            && neg
                .chars()
                .all(|c| c == '0' || c == '.' || c.is_alphabetic())
        {
            // "-0s" is zero in Go; anything else negative is refused.
            let inner = parse_go_duration(neg)?;
            if inner.is_zero() {
                return Ok(Duration::ZERO);
            }
        }
        return Err(bad("must be a positive value"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("missing unit"))?;
        if num_end == 0 {
            return Err(bad("expected a number"));
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad("bad number"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(bad(&format!("unknown unit {u:?}"))),
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            ("0", 0.0),
            ("30s", 30.0),
            ("1m30s", 90.0),
            ("1.5h", 5400.0),
            ("300ms", 0.3),
            ("2h45m", 9900.0),
            ("10us", 0.00001),
            ("-0s", 0.0),
        ];
        for (s, want) in cases {
            let got = parse_go_duration(s).expect(s).as_secs_f64();
            assert!((got - want).abs() < 1e-9, "{s}: {got}");
        }
        for bad in ["", "30", "s", "1x", "-1s", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
    }
}
