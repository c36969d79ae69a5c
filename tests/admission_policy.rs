//! ValidatingAdmissionPolicies (CEL, in the API server) with the real kubectl against a real
//! `skiff server`: a policy bound with `Deny` to the namespaces of a label, then with `Warn`;
//! variables, `messageExpression`, a reason; bad policies and bindings refused.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};

const POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: replica-limit.example.com
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [apps]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [deployments]
  variables:
  - name: limit
    expression: "'limit' in namespaceObject.metadata.labels ? int(namespaceObject.metadata.labels['limit']) : 5"
  validations:
  - expression: object.spec.replicas <= variables.limit
    messageExpression: "'replicas must be at most ' + string(variables.limit)"
    reason: Forbidden
  - expression: "!object.metadata.name.startsWith('tmp-')"
"#;

fn binding(actions: &str) -> String {
    format!(
        r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: replica-limit-binding
spec:
  policyName: replica-limit.example.com
  validationActions: [{actions}]
  matchResources:
    namespaceSelector:
      matchLabels:
        env: prod
"#
    )
}

#[test]
fn a_policy_denies_then_warns_where_its_binding_applies() {
    let c = Cluster::start();
    c.kubectl(&["create", "namespace", "prod"]);
    c.kubectl(&["label", "namespace", "prod", "env=prod", "limit=3"]);
    c.kubectl(&["create", "namespace", "dev"]);
    c.kubectl_stdin(&["apply", "-f", "-"], Some(POLICY));
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&binding("Deny")));
    let table = c.kubectl(&["get", "validatingadmissionpolicies,validatingadmissionpolicybindings"]);
    assert!(table.contains("VALIDATIONS") && table.contains("POLICYNAME"), "{table}");
    assert!(table.contains("replica-limit-binding") && table.contains("replica-limit.example.com"), "{table}");

    // In effect within moments (the configuration cache follows the watch).
    let mut err = String::new();
    eventually("the policy to deny", Duration::from_secs(20), || {
        let out = c.kubectl_output(&["create", "deployment", "big", "--image=x", "--replicas=4", "-n", "prod"], None);
        if out.status.success() {
            c.kubectl(&["delete", "deployment", "big", "-n", "prod"]);
            return false;
        }
        err = String::from_utf8_lossy(&out.stderr).into_owned();
        true
    });
    assert!(
        err.contains(
            "ValidatingAdmissionPolicy 'replica-limit.example.com' with binding 'replica-limit-binding' denied request: replicas must be at most 3"
        ),
        "{err}"
    );
    c.kubectl(&["create", "deployment", "small", "--image=x", "--replicas=3", "-n", "prod"]);
    let patch = r#"{"spec":{"replicas":6}}"#;
    let err = c.kubectl_fails(&["patch", "deployment", "small", "-n", "prod", "-p", patch], None);
    assert!(err.contains("replicas must be at most 3"), "updates are checked too: {err}");
    assert!(err.contains("Error from server (Forbidden)"), "the validation's reason: {err}");
    let err = c.kubectl_fails(&["create", "deployment", "tmp-x", "--image=x", "--replicas=1", "-n", "prod"], None);
    assert!(err.contains("denied request: failed expression: !object.metadata.name.startsWith('tmp-')"), "{err}");
    // Outside the binding's namespaces nothing is checked.
    c.kubectl(&["create", "deployment", "big", "--image=x", "--replicas=9", "-n", "dev"]);

    // Warn: the request passes with kube's warning.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&binding("Warn")));
    let mut stderr = String::new();
    eventually("the binding to warn", Duration::from_secs(20), || {
        let out =
            c.kubectl_output(&["create", "deployment", "warned", "--image=x", "--replicas=8", "-n", "prod"], None);
        if !out.status.success() {
            return false;
        }
        stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        true
    });
    assert!(
        stderr.contains(
            "Warning: Validation failed for ValidatingAdmissionPolicy 'replica-limit.example.com' with binding 'replica-limit-binding': replicas must be at most 3"
        ),
        "{stderr}"
    );

    // Bad objects are refused with their fields.
    let bad = POLICY.replace("object.spec.replicas <= variables.limit", "object.spec.replicas <=");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&bad));
    assert!(err.contains("spec.validations[0].expression: Invalid value"), "{err}");
    assert!(err.contains("compilation failed"), "{err}");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&binding("Deny, Warn")));
    assert!(err.contains("must not contain both Deny and Warn"), "{err}");

    // Removing the binding lifts the policy.
    c.kubectl(&["delete", "validatingadmissionpolicybinding", "replica-limit-binding"]);
    eventually("the policy to be lifted", Duration::from_secs(20), || {
        let out = c.kubectl_output(&["create", "deployment", "free", "--image=x", "--replicas=9", "-n", "prod"], None);
        out.status.success()
    });
}
