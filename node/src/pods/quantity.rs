//! Resource quantities (`128Mi`, `500m`, `1.5`) as the kubelet needs them: bytes and millicores.

/// Bytes of a memory quantity (`128Mi`, `1G`, `1e6`, `512`).
pub fn bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let units: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| (v * factor).ceil() as u64);
        }
    }
    q.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| v.ceil() as u64)
}

/// Millicores of a CPU quantity (`500m`, `2`, `0.5`).
pub fn millicores(q: &str) -> Option<u64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| v.ceil() as u64);
    }
    q.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| (v * 1000.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_memory_and_cpu() {
        assert_eq!(super::bytes("128Mi"), Some(128 << 20));
        assert_eq!(super::bytes("1G"), Some(1_000_000_000));
        assert_eq!(super::bytes("512"), Some(512));
        assert_eq!(super::bytes("lots"), None);
        assert_eq!(super::millicores("250m"), Some(250));
        assert_eq!(super::millicores("1.5"), Some(1500));
        assert_eq!(super::millicores("-1"), None);
    }
}
