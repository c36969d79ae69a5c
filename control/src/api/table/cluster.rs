//! Table columns of the cluster-administration kinds, as kube's printers write them:
//! CertificateSigningRequests, APIServices, FlowSchemas and PriorityLevelConfigurations.

use jiff::Timestamp;
use serde_json::Value;

use super::{age, col, human_duration, int, list, name, text, Column, AGE, NAME};

const CSR_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    col("SignerName", "string", "Name of the signer that will sign (or has signed) the request."),
    col("Requestor", "string", "Name of the user that created the request."),
    col("RequestedDuration", "string", "The requested duration of validity of the issued certificate."),
    col("Condition", "string", "The approval and issuance state of the request."),
];

const APISERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Service", "string", "The reference to the service that hosts this API endpoint."),
    col("Available", "string", "Whether this service is available."),
    AGE,
];

const FLOW_SCHEMA_COLUMNS: &[Column] = &[
    NAME,
    col("PriorityLevel", "string", "The name of the priority level the matching requests are assigned to."),
    col("MatchingPrecedence", "string", "The matching precedence of this FlowSchema."),
    col("DistinguisherMethod", "string", "How a flow is distinguished among the matching requests."),
    AGE,
    col("MissingPL", "string", "Whether the referenced priority level is missing (the Dangling condition)."),
];

const PRIORITY_LEVEL_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "Whether requests of this priority level are limited or exempt."),
    col(
        "NominalConcurrencyShares",
        "string",
        "The shares of the server's concurrency limit this level nominally gets.",
    ),
    col("Queues", "string", "The number of queues."),
    col("HandSize", "string", "The number of queues a flow is shuffle-sharded to."),
    col("QueueLengthLimit", "string", "The most requests a queue may hold."),
    AGE,
];

/// The columns of one of these kinds.
pub(super) fn columns(kind: &str) -> Option<&'static [Column]> {
    match kind {
        "CertificateSigningRequest" => Some(CSR_COLUMNS),
        "APIService" => Some(APISERVICE_COLUMNS),
        "FlowSchema" => Some(FLOW_SCHEMA_COLUMNS),
        "PriorityLevelConfiguration" => Some(PRIORITY_LEVEL_COLUMNS),
        _ => None,
    }
}

/// The cells of one of these kinds.
pub(super) fn cells(kind: &str, obj: &Value, now: Timestamp) -> Option<Vec<Value>> {
    Some(match kind {
        "CertificateSigningRequest" => csr_cells(obj, now),
        "APIService" => apiservice_cells(obj, now),
        "FlowSchema" => flow_schema_cells(obj, now),
        "PriorityLevelConfiguration" => priority_level_cells(obj, now),
        _ => return None,
    })
}

fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a Value> {
    list(obj, &["status", "conditions"]).iter().find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
}

/// `Approved,Issued`, `Denied`, `Pending`, with `,Failed` when signing failed.
fn csr_condition(obj: &Value) -> String {
    let mut out = if condition(obj, "Denied").is_some() {
        "Denied".to_string()
    } else if condition(obj, "Approved").is_some() {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if condition(obj, "Failed").is_some() {
        out.push_str(",Failed");
    }
    if !text(obj, &["status", "certificate"]).is_empty() {
        out.push_str(",Issued");
    }
    out
}

fn csr_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let seconds = int(obj, &["spec", "expirationSeconds"]);
    let duration = match u64::try_from(seconds) {
        Ok(s) if s > 0 => human_duration(std::time::Duration::from_secs(s)),
        _ => "<none>".to_string(),
    };
    vec![
        name(obj).into(),
        age(obj, now),
        text(obj, &["spec", "signerName"]).into(),
        text(obj, &["spec", "username"]).into(),
        duration.into(),
        csr_condition(obj).into(),
    ]
}

fn apiservice_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let service = match obj.pointer("/spec/service").filter(|s| s.is_object()) {
        Some(s) => format!("{}/{}", text(s, &["namespace"]), text(s, &["name"])),
        None => "Local".to_string(),
    };
    let available = match condition(obj, "Available") {
        Some(c) if text(c, &["status"]) == "True" => "True".to_string(),
        Some(c) => format!("{} ({})", text(c, &["status"]), text(c, &["reason"])),
        None => "Unknown".to_string(),
    };
    vec![name(obj).into(), service.into(), available.into(), age(obj, now)]
}

fn flow_schema_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let method = match text(obj, &["spec", "distinguisherMethod", "type"]) {
        "" => "<none>",
        m => m,
    };
    let missing = match condition(obj, "Dangling").map(|c| text(c, &["status"])) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "?".to_string(),
    };
    vec![
        name(obj).into(),
        text(obj, &["spec", "priorityLevelConfiguration", "name"]).into(),
        int(obj, &["spec", "matchingPrecedence"]).into(),
        method.into(),
        age(obj, now),
        missing.into(),
    ]
}

fn priority_level_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let none = || Value::from("<none>");
    let limited = obj.pointer("/spec/limited").filter(|l| l.is_object());
    let shares = limited.map_or_else(none, |l| int(l, &["nominalConcurrencyShares"]).into());
    let queuing = limited.and_then(|l| l.pointer("/limitResponse/queuing")).filter(|q| q.is_object());
    let field = |f: &str| queuing.map_or_else(none, |q| int(q, &[f]).into());
    vec![
        name(obj).into(),
        text(obj, &["spec", "type"]).into(),
        shares,
        field("queues"),
        field("handSize"),
        field("queueLengthLimit"),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csr_conditions_print_as_kubes() {
        let approved = json!({"status": {"conditions": [{"type": "Approved"}], "certificate": "LS0t"}});
        assert_eq!(csr_condition(&approved), "Approved,Issued");
        assert_eq!(csr_condition(&json!({})), "Pending");
        let cells =
            cells("CertificateSigningRequest", &json!({"spec": {"expirationSeconds": 86400}}), Timestamp::now())
                .expect("a CSR");
        assert_eq!(cells.len(), CSR_COLUMNS.len());
        assert_eq!(cells[4], "24h");
        let svc = json!({"spec": {"service": {"namespace": "a", "name": "b"}},
                         "status": {"conditions": [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck"}]}});
        let row = apiservice_cells(&svc, Timestamp::now());
        assert_eq!(row[1], "a/b");
        assert_eq!(row[2], "False (FailedDiscoveryCheck)");
    }
}
