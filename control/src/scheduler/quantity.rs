//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) as integers.

/// Milli-units of a quantity (`"250m"` -> 250, `"2"` -> 2000); `None` if it does not parse.
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (mantissa, exp10) = match suffix {
        s if s.starts_with(['e', 'E']) => (number, s[1..].parse::<i32>().ok()?),
        _ => (number, 0),
    };
    let factor: i128 = match suffix {
        "" => 1,
        _ if suffix.starts_with(['e', 'E']) => 1,
        "n" => return scaled(mantissa, 1, 1_000_000),
        "u" => return scaled(mantissa, 1, 1_000),
        "m" => return scaled(mantissa, 1, 1),
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => return None,
    };
    let milli = scaled(mantissa, factor * 1000, 1)?;
    if exp10 >= 0 {
        milli.checked_mul(10i128.checked_pow(u32::try_from(exp10).ok()?)?)
    } else {
        // A divisor past i128 leaves nothing: the quantity rounds to zero.
        Some(10i128.checked_pow(exp10.unsigned_abs()).map_or(0, |div| milli / div))
    }
}

/// `mantissa * mul / div`, rounding up like Kubernetes rounds requests.
fn scaled(mantissa: &str, mul: i128, div: i128) -> Option<i128> {
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let negative = int.starts_with('-');
    let int = int.trim_start_matches(['+', '-']);
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_digits = frac.len().min(18) as u32;
    let frac_val: i128 = if frac_digits == 0 { 0 } else { frac[..frac_digits as usize].parse().ok()? };
    let denom = 10i128.pow(frac_digits);
    let numerator = (int.checked_mul(denom)?.checked_add(frac_val)?).checked_mul(mul)?;
    let total = denom.checked_mul(div)?;
    // Rounded up without `numerator + total - 1`, which could overflow.
    let value = numerator / total + i128::from(numerator % total != 0);
    Some(if negative { -value } else { value })
}

/// Whole units (bytes, pods) of a quantity.
pub fn parse_units(s: &str) -> Option<i128> {
    parse_milli(s).map(|m| m / 1000 + i128::from(m % 1000 > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_milli("250m"), Some(250));
        assert_eq!(parse_milli("2"), Some(2000));
        assert_eq!(parse_milli("0.5"), Some(500));
        assert_eq!(parse_units("128Mi"), Some(128 << 20));
        assert_eq!(parse_units("1G"), Some(1_000_000_000));
        assert_eq!(parse_units("2e3"), Some(2000));
        assert_eq!(parse_units("110"), Some(110));
        assert_eq!(parse_milli("abc"), None);
        assert_eq!(parse_milli("1Xi"), None);
        assert_eq!(parse_milli(""), None);
    }

    /// Property: any string built from quantity characters parses or is refused, never panics,
    /// and whatever parses is monotone in its digits (appending a digit never makes it smaller
    /// for a non-negative value).
    #[test]
    fn never_panics_on_any_quantity() {
        let alphabet: Vec<char> = "0123456789.+-eEinumkKMGTP".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 60) as usize;
            let s: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let _ = parse_milli(&s);
            let _ = parse_units(&s);
        }
        for huge in [
            "9223372036854775807",
            "9223372036854775807P",
            "99999999999999999999999999999999999999Pi",
            "170141183460469231731687303715884105727",
            "1e38",
            "1e39",
            "9e9999999",
            "1e-99999",
            "1e-2147483648",
            "1e2147483647",
            "1e-2147483649",
            "0.99999999999999999999999999999999999999Pi",
            "-170141183460469231731687303715884105727",
        ] {
            let _ = parse_milli(huge);
            let _ = parse_units(huge);
        }
        assert_eq!(parse_milli("1e39"), None);
        assert_eq!(parse_units("1Ki"), Some(1024));
        for n in [0i128, 1, 7, 999, 1000, 123_456_789] {
            let base = parse_milli(&n.to_string()).expect("parses");
            let longer = parse_milli(&format!("{n}0")).expect("parses");
            assert!(longer >= base, "{n}");
        }
    }
}
