//! Resource quantities (`128Mi`, `500m`, `1.5`, `2e3`) as the kubelet needs them: bytes and millicores.
//! Exact integer arithmetic, rounded up as Kubernetes rounds; a value past `u64` saturates to
//! `u64::MAX` (any API server may hand the kubelet `9999999999999999999Ei`), never wraps or panics.

/// Bytes of a memory quantity (`128Mi`, `1G`, `1e6`, `512`), rounded up.
pub fn bytes(q: &str) -> Option<u64> {
    scaled(q, 0)
}

/// Millicores of a CPU quantity (`500m`, `2`, `0.5`), rounded up.
pub fn millicores(q: &str) -> Option<u64> {
    scaled(q, 3)
}

/// A parsed quantity: `digits * 10^exp10 * 2^exp2`.
struct Parsed {
    digits: u128,
    /// The digits did not fit: the value is at least `digits * 10^exp10 * 2^exp2` and far more.
    huge: bool,
    exp10: i64,
    exp2: u32,
}

fn parse(q: &str) -> Option<Parsed> {
    let q = q.trim();
    let q = q.strip_prefix('+').unwrap_or(q);
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let (exp10, exp2): (i64, u32) = match suffix {
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
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s if s.starts_with(['e', 'E']) => (s[1..].parse::<i64>().ok()?.clamp(-1000, 1000), 0),
        _ => return None,
    };
    let mut digits: u128 = 0;
    let mut huge = false;
    let mut dropped: i64 = 0;
    for c in int.chars().chain(frac.chars()) {
        let d = u128::from(c.to_digit(10)?);
        match digits.checked_mul(10).and_then(|v| v.checked_add(d)) {
            Some(v) if !huge => digits = v,
            _ => {
                // Past u128: keep the leading digits and count the rest as a power of ten.
                huge = true;
                dropped += 1;
            }
        }
    }
    let frac_len = i64::try_from(frac.len()).ok()?;
    Some(Parsed { digits, huge, exp10: exp10 - frac_len + dropped, exp2 })
}

/// `ceil(q * 10^extra10)` saturated to `u64`; `None` when `q` does not parse or is negative.
fn scaled(q: &str, extra10: i64) -> Option<u64> {
    let p = parse(q)?;
    let exp10 = p.exp10 + extra10;
    let mut num = p.digits;
    let saturate = |v: Option<u128>| v.map_or(u64::MAX, |v| u64::try_from(v).unwrap_or(u64::MAX));
    if num == 0 {
        return Some(0);
    }
    num = match num.checked_mul(1u128 << p.exp2) {
        Some(v) => v,
        None => return Some(u64::MAX),
    };
    if exp10 >= 0 {
        let pow = u32::try_from(exp10).ok().and_then(|e| 10u128.checked_pow(e));
        return Some(saturate(pow.and_then(|pow| num.checked_mul(pow))));
    }
    if p.huge {
        // More than 38 significant digits and a negative exponent: divide what we kept.
        let pow = u32::try_from(-exp10).ok().and_then(|e| 10u128.checked_pow(e));
        return Some(pow.map_or(1, |pow| saturate(Some(num.div_ceil(pow)))));
    }
    match u32::try_from(-exp10).ok().and_then(|e| 10u128.checked_pow(e)) {
        Some(pow) => Some(saturate(Some(num.div_ceil(pow)))),
        // Below one unit (`1e-100`): rounds up to one.
        None => Some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::{bytes, millicores};

    #[test]
    fn parses_memory_and_cpu() {
        assert_eq!(bytes("128Mi"), Some(128 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("512"), Some(512));
        assert_eq!(bytes("1e6"), Some(1_000_000));
        assert_eq!(bytes("1.5Ki"), Some(1536));
        assert_eq!(bytes("lots"), None);
        assert_eq!(bytes("-1Mi"), None);
        assert_eq!(bytes("1.2.3"), None);
        assert_eq!(millicores("250m"), Some(250));
        assert_eq!(millicores("1.5"), Some(1500));
        assert_eq!(millicores("0.0001"), Some(1));
        assert_eq!(millicores("100u"), Some(1));
        assert_eq!(millicores("-1"), None);
    }

    #[test]
    fn huge_values_saturate() {
        assert_eq!(bytes("9999999999999999999Ei"), Some(u64::MAX));
        assert_eq!(bytes("16Ei"), Some(u64::MAX));
        assert_eq!(bytes("15Ei"), Some(15 << 60));
        assert_eq!(bytes("1e1000"), Some(u64::MAX));
        assert_eq!(bytes("99999999999999999999999999999999999999999999999999"), Some(u64::MAX));
        assert_eq!(bytes("1e-1000"), Some(1));
        assert_eq!(bytes("0.000000000000000000000000000000000000000000000001"), Some(1));
        assert_eq!(millicores("9999999999999999999E"), Some(u64::MAX));
        assert_eq!(millicores("18446744073709551615"), Some(u64::MAX));
        assert_eq!(millicores("18446744073709551.615"), Some(u64::MAX));
        assert_eq!(bytes("18446744073709551615"), Some(u64::MAX));
    }
}
