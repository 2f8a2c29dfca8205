//! Numbers as the field's Python tools write them, so a file reads the same as theirs: the
//! leaderboard rounds with `round(x, n)` and stores `str(x)` in its `values`; pandas writes
//! `repr(x)` into CSV cells.

/// Python's `round(x, digits)` for a float: the exact binary value rounded half to even at
/// `digits` decimals, read back (Rust's `{:.N}` formatting rounds the exact value the same way).
pub fn round(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// Python's `repr(x)` (and `str(x)`) of a float: the shortest digits that read back to `x`,
/// positional for decimal exponents -4..16 with at least one digit after the point
/// (`1.0`, `0.0001`), scientific otherwise (`1e-05`, `1.5e+16`).
pub fn repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "-1.2345e-5".
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        if point <= 0 {
            let zeros = "0".repeat(point.unsigned_abs() as usize);
            format!("{sign}0.{zeros}{digits}")
        } else {
            let point = point as usize;
            if digits.len() <= point {
                let zeros = "0".repeat(point - digits.len());
                format!("{sign}{digits}{zeros}.0")
            } else {
                format!("{sign}{}.{}", &digits[..point], &digits[point..])
            }
        }
    } else {
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exponent.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_matches_python() {
        // Each right-hand side is what CPython 3 prints for `repr` of the left-hand side.
        let cases: [(f64, &str); 16] = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (96.123457, "96.123457"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000013, "1.3e-05"),
            (-2.5e-7, "-2.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789.125, "123456789.125"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e100, "1e+100"),
        ];
        for (x, want) in cases {
            assert_eq!(repr(x), want, "{x:e}");
        }
    }

    #[test]
    fn round_is_pythons_half_even_on_the_exact_value() {
        // CPython: round(0.125, 2) == 0.12, round(0.375, 2) == 0.38, round(2.5) == 2.0,
        // round(1.0000005, 6) == 1.000001 (the binary value lies above the tie),
        // round(0.0000125, 6) == 1.3e-05.
        assert_eq!(round(0.125, 2), 0.12);
        assert_eq!(round(0.375, 2), 0.38);
        assert_eq!(round(2.5, 0), 2.0);
        assert_eq!(round(1.000_000_5, 6), 1.000_001);
        assert_eq!(round(0.000_012_5, 6), 0.000_013);
        assert_eq!(round(96.123_456_5, 6), 96.123_457);
        assert_eq!(round(-1.234_567_8, 3), -1.235);
    }
}
