//! The `pod-template-hash`: a stable hash of a Deployment's pod template (and its collision
//! count), encoded as Kubernetes does (`rand.SafeEncodeString` of the decimal 32-bit FNV-1a sum).

use serde_json::Value;

/// The alphabet of Kubernetes' safe encoding (no vowels, no confusable characters).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a(hash: &mut u32, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u32::from(*b);
        *hash = hash.wrapping_mul(0x0100_0193);
    }
}

/// Writes `v` with its map keys sorted, so the hash does not depend on field order.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(k) {
                    canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `rand.SafeEncodeString`: each byte of `s` to a character of [`ALPHANUMS`].
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char).collect()
}

/// The hash of `template` with `collision_count` mixed in (when set).
pub fn pod_template_hash(template: &Value, collision_count: Option<u32>) -> String {
    let mut text = String::new();
    canonical(template, &mut text);
    let mut hash = 0x811c_9dc5u32;
    fnv1a(&mut hash, text.as_bytes());
    if let Some(count) = collision_count {
        fnv1a(&mut hash, &count.to_le_bytes());
    }
    safe_encode(&hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        let mut h = 0x811c_9dc5u32;
        fnv1a(&mut h, b"a");
        assert_eq!(h, 0xe40c_292c);
    }

    #[test]
    fn the_hash_is_stable_and_ignores_key_order() {
        let a = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b = json!({"spec": {"containers": [{"image": "i:1", "name": "c"}]}, "metadata": {"labels": {"tier": "fe", "app": "web"}}});
        let h = pod_template_hash(&a, None);
        assert_eq!(h, pod_template_hash(&b, None));
        assert!(h.chars().all(|c| ALPHANUMS.contains(&(c as u8))));
        assert!(!h.is_empty() && h.len() <= 10);
        let changed = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}, "spec": {"containers": [{"name": "c", "image": "i:2"}]}});
        assert_ne!(h, pod_template_hash(&changed, None));
        assert_ne!(h, pod_template_hash(&a, Some(1)));
    }

    #[test]
    fn safe_encoding_maps_digits_like_kubernetes() {
        // '0' is byte 48, 48 % 27 = 21 -> '4'; '1' -> '5'; '9' (57 % 27 = 3) -> 'f'.
        assert_eq!(safe_encode("019"), "45f");
    }
}
