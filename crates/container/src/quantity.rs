//! Kubernetes resource quantities (`"250m"`, `"64Mi"`, `"1.5"`, `"1e3"`).
//!
//! A small, exact parser of upstream's quantity grammar
//! (`staging/src/k8s.io/apimachinery/pkg/api/resource/quantity.go`):
//!
//! ```text
//! quantity ::= sign? number suffix
//! number   ::= digits | digits "." digits? | "." digits
//! suffix   ::= "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
//!            | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
//!            | ("e" | "E") sign? digits
//! ```
//!
//! Values are computed in 128-bit integers, so nothing is lost to floating
//! point; like upstream's `Value()` and `MilliValue()`, a fraction is rounded
//! away from zero (`"0.1m"` is 1 milli-unit, `"1.5"` bytes is 2 bytes). Bad
//! input is an [`Error::InvalidQuantity`], never a panic; values beyond `i64`
//! are errors rather than upstream's silent saturation.

use crate::error::{Error, Result};

/// One parsed quantity: `mantissa × 10^exp10 × 1024^bin` with a sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    bin: u32,
}

fn invalid(value: &str, reason: &'static str) -> Error {
    Error::InvalidQuantity {
        value: value.to_owned(),
        reason,
    }
}

fn parse(text: &str) -> Result<Parsed> {
    let s = text.trim();
    if s.is_empty() {
        return Err(invalid(text, "empty"));
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if bytes[0] == b'+' || bytes[0] == b'-' {
        negative = bytes[0] == b'-';
        i = 1;
    }
    let mut mantissa: u128 = 0;
    let mut frac_digits: i32 = 0;
    let mut digits = 0usize;
    let mut seen_dot = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_digit() {
            digits += 1;
            // Drop insignificant trailing digits beyond 30 significant ones:
            // u128 holds 38 digits and quantities never need more than 30.
            if mantissa >= 10u128.pow(30) {
                if !seen_dot {
                    return Err(invalid(text, "too many digits"));
                }
            } else {
                mantissa = mantissa * 10 + u128::from(c - b'0');
                if seen_dot {
                    frac_digits += 1;
                }
            }
        } else if c == b'.' && !seen_dot {
            seen_dot = true;
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return Err(invalid(text, "no digits"));
    }
    let suffix = &s[i..];
    let (exp10, bin) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        other => {
            let rest = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(|| invalid(text, "unknown suffix"))?;
            let (neg, num) = match rest.as_bytes().first() {
                Some(b'-') => (true, &rest[1..]),
                Some(b'+') => (false, &rest[1..]),
                _ => (false, rest),
            };
            if num.is_empty() || num.len() > 4 || !num.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(text, "bad exponent"));
            }
            let e: i32 = num.parse().map_err(|_| invalid(text, "bad exponent"))?;
            (if neg { -e } else { e }, 0)
        }
    };
    Ok(Parsed {
        negative,
        mantissa,
        exp10: exp10 - frac_digits,
        bin,
    })
}

const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// The common case without allocation or 128-bit arithmetic: unsigned,
/// at most 18 digits, a plain SI or binary suffix, a result within `i64`.
/// `None` sends the text to the exact general path (which also reports errors).
fn scaled_fast(text: &str, scale: i32) -> Option<i64> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut mant: u64 = 0;
    let mut digits = 0;
    let mut frac: i32 = 0;
    let mut dot = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            if digits == 18 {
                return None;
            }
            mant = mant * 10 + u64::from(c - b'0');
            digits += 1;
            if dot {
                frac += 1;
            }
        } else if c == b'.' && !dot {
            dot = true;
        } else {
            break;
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    let (e10, bin): (i32, u32) = match &b[i..] {
        b"" => (0, 0),
        b"m" => (-3, 0),
        b"k" => (3, 0),
        b"M" => (6, 0),
        b"G" => (9, 0),
        b"T" => (12, 0),
        b"Ki" => (0, 10),
        b"Mi" => (0, 20),
        b"Gi" => (0, 30),
        b"Ti" => (0, 40),
        _ => return None,
    };
    if mant == 0 {
        return Some(0);
    }
    let v = mant.checked_mul(1u64.checked_shl(bin)?)?;
    let exp = e10 - frac + scale;
    let out = if exp >= 0 {
        v.checked_mul(*POW10.get(exp as usize)?)?
    } else {
        v.div_ceil(*POW10.get(exp.unsigned_abs() as usize)?)
    };
    i64::try_from(out).ok()
}

/// `ceil(|q| × 10^scale)` with the sign of `q`, as an `i64`.
fn scaled(text: &str, scale: i32) -> Result<i64> {
    if let Some(v) = scaled_fast(text, scale) {
        return Ok(v);
    }
    let p = parse(text)?;
    if p.mantissa == 0 {
        return Ok(0);
    }
    let too_large = || invalid(text, "out of range");
    let mut v = p.mantissa;
    for _ in 0..p.bin {
        v = v.checked_mul(1024).ok_or_else(too_large)?;
    }
    let exp = p.exp10 + scale;
    let magnitude = if exp >= 0 {
        let mul = 10u128
            .checked_pow(exp.unsigned_abs())
            .ok_or_else(too_large)?;
        v.checked_mul(mul).ok_or_else(too_large)?
    } else {
        match 10u128.checked_pow(exp.unsigned_abs()) {
            Some(div) => v.div_ceil(div),
            // Divisor beyond u128: the value is a positive fraction below 1.
            None => 1,
        }
    };
    let m = i64::try_from(magnitude).map_err(|_| too_large())?;
    Ok(if p.negative { -m } else { m })
}

/// The quantity in whole units, rounded away from zero (upstream `Quantity.Value()`).
///
/// ```
/// assert_eq!(kubelet_container::quantity::value("64Mi").unwrap(), 67_108_864);
/// assert_eq!(kubelet_container::quantity::value("1e3").unwrap(), 1000);
/// assert!(kubelet_container::quantity::value("12Qi").is_err());
/// ```
pub fn value(text: &str) -> Result<i64> {
    scaled(text, 0)
}

/// The quantity in thousandths, rounded away from zero (upstream
/// `Quantity.MilliValue()`): milli-CPU for `cpu`.
///
/// ```
/// assert_eq!(kubelet_container::quantity::milli_value("250m").unwrap(), 250);
/// assert_eq!(kubelet_container::quantity::milli_value("1.5").unwrap(), 1500);
/// ```
pub fn milli_value(text: &str) -> Result<i64> {
    scaled(text, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_upstream() {
        let cases: &[(&str, i64, i64)] = &[
            // (text, Value(), MilliValue())
            ("0", 0, 0),
            ("250m", 1, 250),
            ("500m", 1, 500),
            ("1", 1, 1000),
            ("1.5", 2, 1500),
            (".5", 1, 500),
            ("2.", 2, 2000),
            ("1e3", 1000, 1_000_000),
            ("1E3", 1000, 1_000_000),
            ("1e-3", 1, 1),
            ("64Mi", 67_108_864, 67_108_864_000),
            ("10Mi", 10_485_760, 10_485_760_000),
            ("2Gi", 2_147_483_648, 2_147_483_648_000),
            ("1Ki", 1024, 1_024_000),
            ("10G", 10_000_000_000, 10_000_000_000_000),
            ("1k", 1000, 1_000_000),
            ("100n", 1, 1),
            ("1u", 1, 1),
            ("0.1m", 1, 1),
            ("1.5Gi", 1_610_612_736, 1_610_612_736_000),
            ("-1", -1, -1000),
            ("+2", 2, 2000),
            ("1E", 1_000_000_000_000_000_000, 0), // milli overflows: checked below
            ("8Ei", 0, 0),                        // overflows: checked below
        ];
        for &(text, v, m) in &cases[..cases.len() - 2] {
            assert_eq!(value(text).unwrap(), v, "value({text})");
            assert_eq!(milli_value(text).unwrap(), m, "milli_value({text})");
        }
        assert_eq!(value("1E").unwrap(), 1_000_000_000_000_000_000);
        assert!(milli_value("1E").is_err());
        assert!(value("8Ei").is_err());
        assert_eq!(value("7Ei").unwrap(), 7 << 60);
        assert_eq!(value("1Ei").unwrap(), 1_152_921_504_606_846_976);
    }

    #[test]
    fn bad_input_is_an_error() {
        for bad in [
            "",
            " ",
            "m",
            "Mi",
            "1.2.3",
            "1Qi",
            "1 Mi",
            "abc",
            "1e",
            "1e+",
            "1e99999",
            "--1",
            "1mi",
            "1KI",
            "99999999999999999999999999999999999999999",
        ] {
            let err = value(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidQuantity { .. }),
                "{bad:?} gave {err:?}"
            );
        }
        // Large exponents overflow instead of panicking.
        assert!(value("1e100").is_err());
        assert_eq!(value("1e-100").unwrap(), 1);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = value(&s);
            let _ = milli_value(&s);
        }

        #[test]
        fn fast_path_agrees_with_exact_path(n in 0u64..1_000_000_000, f in 0u32..1000, suffix in "(|m|k|M|G|Ki|Mi|Gi)") {
            for text in [format!("{n}{suffix}"), format!("{n}.{f}{suffix}"), format!(".{f}{suffix}")] {
                for scale in [0, 3] {
                    let fast = scaled_fast(&text, scale);
                    let p = parse(&text).unwrap();
                    // The exact path, bypassing the fast one.
                    let exact = {
                        let mut v = p.mantissa;
                        for _ in 0..p.bin { v *= 1024; }
                        let e = p.exp10 + scale;
                        if e >= 0 { v * 10u128.pow(e as u32) } else { v.div_ceil(10u128.pow((-e) as u32)) }
                    };
                    if let Some(fv) = fast {
                        proptest::prop_assert_eq!(fv as u128, exact, "{}", text);
                    }
                }
            }
        }

        #[test]
        fn integers_round_trip(n in 0i64..1_000_000_000_000) {
            proptest::prop_assert_eq!(value(&n.to_string()).unwrap(), n);
            proptest::prop_assert_eq!(milli_value(&format!("{n}m")).unwrap(), n);
        }
    }
}
