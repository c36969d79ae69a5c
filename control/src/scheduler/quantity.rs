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
        Some(milli / 10i128.checked_pow(u32::try_from(-exp10).ok()?)?)
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
    let value = (numerator + total - 1) / total;
    Some(if negative { -value } else { value })
}

/// Whole units (bytes, pods) of a quantity.
pub fn parse_units(s: &str) -> Option<i128> {
    parse_milli(s).map(|m| (m + 999) / 1000)
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
}
