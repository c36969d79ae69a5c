//! The arithmetic of a rollout, pure: `maxSurge`/`maxUnavailable` from ints or percentages
//! (surge rounds up, unavailable down, never both zero), how far the new ReplicaSet may grow
//! and how far old ones may shrink (Kubernetes' `deploymentutil` and `rolling.go`).

use serde_json::Value;

/// What the math needs of one ReplicaSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsView {
    pub name: String,
    /// `spec.replicas`.
    pub replicas: i64,
    /// `status.availableReplicas`.
    pub available: i64,
    /// `metadata.creationTimestamp`, for oldest-first ordering.
    pub created: String,
}

/// An int-or-string field's value against `total`: an int as is, `"N%"` scaled and rounded.
pub fn scaled_value(v: Option<&Value>, total: i64, round_up: bool, default: &str) -> Result<i64, String> {
    let v = v.cloned().unwrap_or_else(|| Value::String(default.to_string()));
    match &v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("invalid value for IntOrString: {n}")),
        Value::String(s) => {
            let pct: i64 = s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| {
                format!("invalid value for IntOrString: invalid type: string is not a percentage: {s:?}")
            })?;
            let product = pct.checked_mul(total).ok_or_else(|| "value out of range".to_string())?;
            Ok(if round_up { (product + 99).div_euclid(100) } else { product.div_euclid(100) })
        }
        other => Err(format!("invalid value for IntOrString: {other}")),
    }
}

/// `(maxSurge, maxUnavailable)` of a RollingUpdate strategy for `replicas` (`ResolveFenceposts`).
pub fn fenceposts(rolling: Option<&Value>, replicas: i64) -> Result<(i64, i64), String> {
    let surge = scaled_value(rolling.and_then(|r| r.get("maxSurge")), replicas, true, "25%")?;
    let unavailable = scaled_value(rolling.and_then(|r| r.get("maxUnavailable")), replicas, false, "25%")?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge.max(0), unavailable.max(0)))
}

/// The replicas the new ReplicaSet may have now (`NewRSNewReplicas` for RollingUpdate).
pub fn new_rs_replicas(desired: i64, max_surge: i64, new_replicas: i64, all_replicas: i64) -> i64 {
    let max_total = desired.saturating_add(max_surge);
    if all_replicas >= max_total {
        return new_replicas;
    }
    let up = (max_total - all_replicas).min(desired - new_replicas).max(0);
    new_replicas + up
}

/// The old ReplicaSets to shrink and their new sizes (`reconcileOldReplicaSets`): first
/// unhealthy replicas, then healthy ones while `minAvailable` holds, oldest first.
pub fn scale_down_old(desired: i64, max_unavailable: i64, new: Option<&RsView>, old: &[RsView]) -> Vec<(String, i64)> {
    let old_count: i64 = old.iter().map(|r| r.replicas).sum();
    if old_count == 0 {
        return Vec::new();
    }
    let all_count = old_count + new.map_or(0, |n| n.replicas);
    let min_available = desired - max_unavailable;
    let new_unavailable = new.map_or(0, |n| (n.replicas - n.available).max(0));
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut sorted: Vec<RsView> = old.to_vec();
    sorted.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    // Unhealthy replicas first: they cost no availability.
    let mut cleaned = 0;
    for rs in sorted.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if rs.replicas == 0 || rs.replicas <= rs.available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(rs.replicas - rs.available);
        rs.replicas -= down;
        cleaned += down;
    }
    // Then healthy ones, while enough stay available.
    let available: i64 =
        sorted.iter().map(|r| r.available.min(r.replicas)).sum::<i64>() + new.map_or(0, |n| n.available);
    if available > min_available {
        let total = available - min_available;
        let mut done = 0;
        for rs in sorted.iter_mut() {
            if done >= total {
                break;
            }
            if rs.replicas == 0 {
                continue;
            }
            let down = rs.replicas.min(total - done);
            rs.replicas -= down;
            done += down;
        }
    }
    sorted
        .into_iter()
        .filter(|rs| old.iter().any(|o| o.name == rs.name && o.replicas != rs.replicas))
        .map(|rs| (rs.name, rs.replicas))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(name: &str, replicas: i64, available: i64, created: &str) -> RsView {
        RsView { name: name.into(), replicas, available, created: created.into() }
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let r = json!({"maxSurge": "25%", "maxUnavailable": "25%"});
        assert_eq!(fenceposts(Some(&r), 3), Ok((1, 0)));
        assert_eq!(fenceposts(Some(&r), 10), Ok((3, 2)));
        assert_eq!(fenceposts(Some(&json!({"maxSurge": 0, "maxUnavailable": 0})), 3), Ok((0, 1)));
        assert_eq!(fenceposts(Some(&json!({"maxSurge": 2, "maxUnavailable": "50%"})), 5), Ok((2, 2)));
        assert_eq!(fenceposts(None, 4), Ok((1, 1)));
        assert!(fenceposts(Some(&json!({"maxSurge": "x"})), 4).is_err());
        assert!(fenceposts(Some(&json!({"maxSurge": "9223372036854775807%"})), 4).is_err());
    }

    #[test]
    fn the_new_set_grows_within_the_surge() {
        // 3 desired, surge 1: old has 3, new 0 -> new may have 1.
        assert_eq!(new_rs_replicas(3, 1, 0, 3), 1);
        // At the limit: no growth.
        assert_eq!(new_rs_replicas(3, 1, 1, 4), 1);
        // Old shrank to 1: new may reach 3 but not beyond desired.
        assert_eq!(new_rs_replicas(3, 1, 1, 2), 3);
        assert_eq!(new_rs_replicas(3, 0, 0, 0), 3);
    }

    #[test]
    fn old_sets_shrink_keeping_min_available() {
        // 3 desired, maxUnavailable 0, new has 1 not yet available: nothing may go.
        let new = rs("new", 1, 0, "2");
        assert!(scale_down_old(3, 0, Some(&new), &[rs("old", 3, 3, "1")]).is_empty());
        // New became available: one old replica may go.
        let new = rs("new", 1, 1, "2");
        assert_eq!(scale_down_old(3, 0, Some(&new), &[rs("old", 3, 3, "1")]), vec![("old".to_string(), 2)]);
        // Unhealthy old replicas go first, then healthy ones down to minAvailable.
        let new = rs("new", 1, 0, "3");
        let olds = [rs("a", 2, 0, "1"), rs("b", 3, 3, "2")];
        assert_eq!(scale_down_old(3, 1, Some(&new), &olds), vec![("a".to_string(), 0), ("b".to_string(), 2)]);
        // Nothing old: nothing to do.
        assert!(scale_down_old(3, 1, Some(&new), &[rs("a", 0, 0, "1")]).is_empty());
    }
}
