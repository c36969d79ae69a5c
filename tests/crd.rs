//! CustomResourceDefinitions with the real kubectl against a real `skiff server`: the CronTab of
//! the Kubernetes documentation, from `kubectl apply` of its CRD to deleting it with its objects.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, Cluster, Process};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            x-kubernetes-validations:
            - rule: "self.replicas <= 8 || self.mode == 'slow'"
              message: more than 8 replicas need mode slow
            - rule: "!has(oldSelf.image) || (has(self.image) && self.image == oldSelf.image)"
              message: image is immutable
            properties:
              cronSpec:
                type: string
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
              replicas:
                type: integer
                minimum: 0
                maximum: 10
                default: 1
              mode:
                type: string
                enum: [fast, slow]
                default: fast
          status:
            type: object
            properties:
              replicas:
                type: integer
              selector:
                type: string
              phase:
                type: string
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const CRONTAB: &str = r#"
apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: my-cron
  namespace: default
spec:
  cronSpec: "* * * * */5"
  image: my-awesome-cron-image
  bogus: dropped
"#;

const CLUSTER_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.tools.example.org
spec:
  group: tools.example.org
  scope: Cluster
  names:
    plural: widgets
    kind: Widget
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

fn apply_crd(c: &Cluster, manifest: &str, name: &str) {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
    assert!(out.contains(&format!("customresourcedefinition.apiextensions.k8s.io/{name} created")), "{out}");
    let out = c.kubectl(&["wait", "--for", "condition=established", "--timeout=20s", &format!("crd/{name}")]);
    assert!(out.contains("condition met"), "{out}");
}

#[test]
fn crontab_lifecycle_with_kubectl() {
    let c = Cluster::start();
    apply_crd(&c, CRD, "crontabs.stable.example.com");
    let crd = c.get_json(&["crd", "crontabs.stable.example.com"]);
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "CronTab", "{crd}");
    assert_eq!(crd["status"]["storedVersions"], serde_json::json!(["v1"]), "{crd}");
    assert_eq!(crd["metadata"]["finalizers"], serde_json::json!(["customresourcecleanup.apiextensions.k8s.io"]));
    assert_eq!(crd["spec"]["names"]["listKind"], "CronTabList", "defaulted");

    // Discovery knows the kind at once.
    let resources = c.kubectl(&["api-resources", "--api-group=stable.example.com"]);
    assert!(
        resources.lines().any(|l| l.starts_with("crontabs") && l.contains("ct") && l.contains("stable.example.com/v1")),
        "{resources}"
    );

    // The schema is published: kubectl explain reads it.
    let explained = c.kubectl(&["explain", "crontab.spec.replicas"]);
    assert!(explained.contains("FIELD: replicas") && explained.contains("<integer>"), "{explained}");

    // A create with an unknown field: pruned (validation off), defaults filled in.
    let out = c.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], Some(CRONTAB));
    assert!(out.contains("crontab.stable.example.com/my-cron created"), "{out}");
    let obj = c.get_json(&["ct", "my-cron"]);
    assert_eq!(obj["spec"]["replicas"], 1, "defaulted: {obj}");
    assert_eq!(obj["spec"]["mode"], "fast", "defaulted: {obj}");
    assert!(obj["spec"].get("bogus").is_none(), "pruned: {obj}");
    assert_eq!(obj["metadata"]["generation"], 1);
    let yaml = c.kubectl(&["get", "crontab", "my-cron", "-o", "yaml"]);
    assert!(yaml.contains("  replicas: 1") && !yaml.contains("  bogus:"), "{yaml}");

    // Strict field validation (kubectl's default) refuses the unknown field, as kube-apiserver.
    let strict = c.kubectl_fails(&["apply", "-f", "-"], Some(&CRONTAB.replace("my-cron", "strict-cron")));
    assert!(strict.contains("unknown field \"spec.bogus\""), "{strict}");

    // Printer columns, by plural and by short name.
    for what in ["crontabs", "ct"] {
        let table = c.kubectl(&["get", what]);
        let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
        assert_eq!(header, ["NAME", "SPEC", "REPLICAS", "AGE"], "{table}");
        assert!(
            table.lines().any(|l| l.starts_with("my-cron") && l.contains("* * * * */5") && l.contains(" 1 ")),
            "{table}"
        );
    }

    // A wrong type is refused with kube-apiserver's message.
    let bad = CRONTAB.replace("my-cron", "bad-cron").replace("  bogus: dropped", "  replicas: \"lots\"");
    let err = c.kubectl_fails(&["apply", "--validate=false", "-f", "-"], Some(&bad));
    assert!(
        err.contains(
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
        ),
        "{err}"
    );
    let bad = CRONTAB.replace("my-cron", "bad-cron").replace("* * * * */5", "never");
    let err = c.kubectl_fails(&["apply", "--validate=false", "-f", "-"], Some(&bad));
    assert!(err.contains("spec.cronSpec: Invalid value: \"never\": spec.cronSpec in body should match"), "{err}");

    // A CEL rule (x-kubernetes-validations) is enforced.
    let bad = CRONTAB.replace("my-cron", "bad-cron").replace("  bogus: dropped", "  replicas: 9");
    let err = c.kubectl_fails(&["apply", "--validate=false", "-f", "-"], Some(&bad));
    assert!(err.contains("spec: Invalid value: \"object\": more than 8 replicas need mode slow"), "{err}");
    let fine = bad.replace("  replicas: 9", "  replicas: 9\n  mode: slow").replace("bad-cron", "slow-cron");
    c.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], Some(&fine));
    c.kubectl(&["delete", "ct", "slow-cron"]);

    // A transition rule (oldSelf) holds on updates.
    let err = c.kubectl_fails(&["patch", "ct", "my-cron", "--type=merge", "-p", r#"{"spec":{"image":"other"}}"#], None);
    assert!(err.contains("spec: Invalid value: \"object\": image is immutable"), "{err}");

    // Merge patch; strategic merge is refused for custom resources.
    c.kubectl(&["patch", "ct", "my-cron", "--type=merge", "-p", r#"{"spec":{"replicas":3}}"#]);
    let obj = c.get_json(&["ct", "my-cron"]);
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(obj["metadata"]["generation"], 2, "a spec change bumps the generation");
    let (code, body) = c.curl(
        "PATCH",
        "/apis/stable.example.com/v1/namespaces/default/crontabs/my-cron",
        "application/strategic-merge-patch+json",
        Some(br#"{"spec":{"replicas":4}}"#),
    );
    assert_eq!(code, 415, "{body}");

    // Scale subresource.
    let out = c.kubectl(&["scale", "ct", "my-cron", "--replicas=5"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(c.get_json(&["ct", "my-cron"])["spec"]["replicas"], 5);

    // Status subresource: the main endpoint ignores status, /status ignores the rest.
    c.kubectl(&["patch", "ct", "my-cron", "--type=merge", "-p", r#"{"status":{"phase":"Ignored"}}"#]);
    assert!(c.get_json(&["ct", "my-cron"]).get("status").is_none());
    c.kubectl(&[
        "patch",
        "ct",
        "my-cron",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":5,"selector":"app=cron","phase":"Running"},"spec":{"replicas":9}}"#,
    ]);
    let obj = c.get_json(&["ct", "my-cron"]);
    assert_eq!(obj["status"]["phase"], "Running");
    assert_eq!(obj["spec"]["replicas"], 5, "spec is not written through /status");
    assert_eq!(obj["metadata"]["generation"], 3, "status changes leave the generation alone");
    let (code, scale) = c.curl(
        "GET",
        "/apis/stable.example.com/v1/namespaces/default/crontabs/my-cron/scale",
        "application/json",
        None,
    );
    assert_eq!(code, 200, "{scale}");
    let scale: serde_json::Value = serde_json::from_str(&scale).expect("scale json");
    assert_eq!(scale["status"], serde_json::json!({"replicas": 5, "selector": "app=cron"}), "{scale}");

    // The other served version reads the same object, in its own apiVersion.
    let (code, body) =
        c.curl("GET", "/apis/stable.example.com/v1beta1/namespaces/default/crontabs/my-cron", "application/json", None);
    assert_eq!(code, 200, "{body}");
    let beta: serde_json::Value = serde_json::from_str(&body).expect("v1beta1 json");
    assert_eq!(beta["apiVersion"], "stable.example.com/v1beta1");
    assert_eq!(beta["spec"]["cronSpec"], "* * * * */5");

    // A watch sees an add.
    let watch = c.kubectl_stream(&["get", "ct", "-w", "-o", "name"]);
    // The initial state first, then the new object.
    let first = watch.next_line(Duration::from_secs(20));
    c.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], Some(&CRONTAB.replace("my-cron", "second-cron")));
    let mut seen: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline && !seen.iter().any(|l| l.contains("second-cron")) {
        if let Some(line) = watch.next_line(Duration::from_millis(500)) {
            seen.push(line);
        }
    }
    drop(watch);
    assert!(first.is_some_and(|l| l == "crontab.stable.example.com/my-cron"), "initial state first: {seen:?}");
    assert!(seen.iter().any(|l| l == "crontab.stable.example.com/second-cron"), "{seen:?}");

    // A raw watch, open while the CRD goes: it sees the objects deleted and then ends.
    let mut raw = Process(Some(
        Command::new("curl")
            .args(["-skN", "-H", &format!("Authorization: Bearer {}", c.token())])
            .arg(format!(
                "{}/apis/stable.example.com/v1/namespaces/default/crontabs?watch=1&resourceVersion=0",
                c.url()
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl watch"),
    ));
    let raw_out = raw.0.as_mut().and_then(|ch| ch.stdout.take()).expect("curl stdout");
    let (raw_tx, raw_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(raw_out).lines().map_while(Result::ok) {
            if raw_tx.send(line).is_err() {
                return;
            }
        }
    });
    let added = raw_rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    assert!(added.contains("\"ADDED\""), "{added}");

    // Deleting the CRD deletes its objects, then the endpoints are gone.
    let out = c.kubectl(&["delete", "crd", "crontabs.stable.example.com", "--timeout=30s"]);
    assert!(out.contains("deleted"), "{out}");
    eventually("the watch to end with its CRD", Duration::from_secs(20), || {
        raw.0.as_mut().is_some_and(|ch| matches!(ch.try_wait(), Ok(Some(_))))
    });
    let events: Vec<String> = raw_rx.try_iter().collect();
    assert!(events.iter().any(|e| e.contains("\"DELETED\"") && e.contains("my-cron")), "{events:?}");
    eventually("the CRD to be gone", Duration::from_secs(20), || {
        !c.kubectl_output(&["get", "crd", "crontabs.stable.example.com"], None).status.success()
    });
    eventually("the endpoint to 404", Duration::from_secs(10), || {
        c.curl("GET", "/apis/stable.example.com/v1/namespaces/default/crontabs", "application/json", None).0 == 404
    });
    let groups = c.kubectl(&["api-resources"]);
    assert!(!groups.contains("stable.example.com"), "{groups}");
    // Re-created, it is empty: the objects went with it.
    apply_crd(&c, CRD, "crontabs.stable.example.com");
    let list = c.get_json(&["crontabs", "-A"]);
    assert_eq!(list["items"], serde_json::json!([]), "{list}");
}

#[test]
fn cluster_scoped_kinds_and_bad_definitions() {
    let c = Cluster::start();
    apply_crd(&c, CLUSTER_CRD, "widgets.tools.example.org");
    let widget =
        "apiVersion: tools.example.org/v1alpha1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  anything: [1, 2]\n";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], Some(widget));
    assert!(out.contains("widget.tools.example.org/w1 created"), "{out}");
    let w = c.get_json(&["widgets", "w1"]);
    assert_eq!(w["spec"]["anything"], serde_json::json!([1, 2]), "preserved: {w}");
    assert!(w["metadata"].get("namespace").is_none());
    let table = c.kubectl(&["get", "widgets"]);
    assert_eq!(table.lines().next().unwrap_or("").split_whitespace().collect::<Vec<_>>(), ["NAME", "AGE"], "{table}");
    let (code, _) =
        c.curl("GET", "/apis/tools.example.org/v1alpha1/namespaces/default/widgets", "application/json", None);
    assert_eq!(code, 404, "a cluster-scoped kind has no namespaced path");
    c.kubectl(&["label", "widget", "w1", "tier=gold"]);
    let listed = c.kubectl(&["get", "widgets", "-l", "tier=gold", "-o", "name"]);
    assert_eq!(listed.trim(), "widget.tools.example.org/w1");
    let listed = c.kubectl(&["get", "widgets", "--field-selector", "metadata.name=nope", "-o", "name"]);
    assert_eq!(listed.trim(), "");

    // Bad CRDs: every cause, with Kubernetes' words.
    let bad = CLUSTER_CRD
        .replace("name: widgets.tools.example.org", "name: gadgets.tools.example.org")
        .replace("scope: Cluster", "scope: Galaxy")
        .replace("storage: true", "storage: false");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&bad));
    assert!(
        err.contains(
            "metadata.name: Invalid value: \"gadgets.tools.example.org\": must be spec.names.plural+\".\"+spec.group"
        ),
        "{err}"
    );
    assert!(err.contains("spec.scope: Unsupported value: \"Galaxy\""), "{err}");
    assert!(err.contains("must have exactly one version marked as storage version"), "{err}");
    let unstructured = CLUSTER_CRD.replace("x-kubernetes-preserve-unknown-fields: true", "properties: {a: {}}");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&unstructured));
    assert!(
        err.contains(
            "properties[spec].properties[a].type: Required value: must not be empty for specified object fields"
        ),
        "{err}"
    );
    let bad_rule = CLUSTER_CRD.replace(
        "x-kubernetes-preserve-unknown-fields: true",
        "x-kubernetes-preserve-unknown-fields: true\n            x-kubernetes-validations:\n            - rule: \"self.size() >\"",
    );
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&bad_rule));
    assert!(err.contains("properties[spec].x-kubernetes-validations[0].rule: Invalid value"), "{err}");
    assert!(err.contains("compilation failed"), "{err}");
    let no_schema = CLUSTER_CRD
        .replace("name: widgets.tools.example.org", "name: gizmos.tools.example.org")
        .replace("plural: widgets", "plural: gizmos")
        .replace("kind: Widget", "kind: Gizmo");
    let no_schema = no_schema.split("    schema:").next().unwrap_or("").to_string();
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&no_schema));
    assert!(err.contains("spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"), "{err}");

    // A second CRD asking for a kind its group already serves: not accepted, not served.
    let clash = CLUSTER_CRD
        .replace("widgets.tools.example.org", "sprockets.tools.example.org")
        .replace("plural: widgets", "plural: sprockets");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&clash));
    eventually("NamesAccepted=False on the clashing CRD", Duration::from_secs(20), || {
        let crd = c.get_json(&["crd", "sprockets.tools.example.org"]);
        let conds = crd["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conds
            .iter()
            .any(|k| k["type"] == "NamesAccepted" && k["status"] == "False" && k["reason"] == "SingularConflict")
            && conds.iter().any(|k| k["type"] == "Established" && k["status"] == "False")
    });
    let (code, _) = c.curl("GET", "/apis/tools.example.org/v1alpha1/sprockets", "application/json", None);
    assert_eq!(code, 404, "a CRD whose names are not accepted serves nothing");
    c.kubectl(&["delete", "crd", "sprockets.tools.example.org"]);

    c.kubectl(&["delete", "crd", "widgets.tools.example.org"]);
    eventually("widgets to 404", Duration::from_secs(20), || {
        c.curl("GET", "/apis/tools.example.org/v1alpha1/widgets/w1", "application/json", None).0 == 404
    });
}

#[test]
fn custom_objects_with_namespaces_owners_server_side_apply_and_restarts() {
    let mut c = Cluster::start();
    apply_crd(&c, CRD, "crontabs.stable.example.com");
    c.kubectl(&["create", "namespace", "team"]);
    let in_team = CRONTAB.replace("namespace: default", "namespace: team").replace("  bogus: dropped\n", "");
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&in_team));

    // Server-side apply creates and updates a custom object (merge patch semantics).
    let ssa = "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata:\n  name: ssa\n  namespace: default\nspec:\n  cronSpec: \"1 2 3 4 5\"\n  replicas: 2\n";
    let out = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(ssa));
    assert!(out.contains("crontab.stable.example.com/ssa serverside-applied"), "{out}");
    c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&ssa.replace("replicas: 2", "replicas: 4")));
    let obj = c.get_json(&["ct", "ssa"]);
    assert_eq!(obj["spec"]["replicas"], 4, "{obj}");
    assert_eq!(obj["spec"]["mode"], "fast", "{obj}");

    // A ConfigMap owned by a custom object goes with it (garbage collector).
    let owner_uid = obj["metadata"]["uid"].as_str().expect("uid").to_string();
    let owned = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  namespace: default\n  ownerReferences:\n  - apiVersion: stable.example.com/v1\n    kind: CronTab\n    name: ssa\n    uid: {owner_uid}\n"
    );
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&owned));
    c.kubectl(&["delete", "ct", "ssa"]);
    eventually("the owned ConfigMap to be collected", Duration::from_secs(20), || {
        !c.kubectl_output(&["get", "cm", "owned"], None).status.success()
    });

    // A restarted server serves the kinds again from the stored CRDs.
    c.kill9();
    c.spawn();
    eventually("crontabs served after a restart", Duration::from_secs(20), || {
        c.kubectl_output(&["get", "ct", "my-cron", "-n", "team"], None).status.success()
    });

    // deletecollection, then a namespace's deletion takes its custom objects.
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&in_team.replace("my-cron", "other-cron")));
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&CRONTAB.replace("my-cron", "d1").replace("  bogus: dropped\n", "")));
    let (code, body) =
        c.curl("DELETE", "/apis/stable.example.com/v1/namespaces/default/crontabs", "application/json", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"d1\"") && !body.contains("other-cron"), "{body}");
    assert!(!c.kubectl_output(&["get", "ct", "d1"], None).status.success());
    assert!(c.kubectl_output(&["get", "ct", "other-cron", "-n", "team"], None).status.success());
    c.kubectl(&["delete", "ct", "other-cron", "-n", "team"]);
    c.kubectl(&["delete", "namespace", "team", "--wait=false"]);
    eventually("the namespace and its crontabs to go", Duration::from_secs(30), || {
        !c.kubectl_output(&["get", "namespace", "team"], None).status.success()
    });
    let (code, body) = c.curl("GET", "/apis/stable.example.com/v1/crontabs", "application/json", None);
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("list json");
    assert_eq!(list["kind"], "CronTabList");
    assert_eq!(list["items"], serde_json::json!([]), "{list}");
}

const SHIRTS_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: shirts.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: shirts
    kind: Shirt
  versions:
  - name: v1
    served: true
    storage: true
    selectableFields:
    - jsonPath: .spec.color
    - jsonPath: .spec.size
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              color: {type: string, enum: [blue, red, green]}
              size: {type: integer}
"#;

fn shirt(name: &str, color: &str, size: u32) -> String {
    format!(
        "apiVersion: stable.example.com/v1\nkind: Shirt\nmetadata:\n  name: {name}\nspec:\n  color: {color}\n  size: {size}\n"
    )
}

#[test]
fn selectable_fields_filter_lists_and_watches() {
    let c = Cluster::start();
    apply_crd(&c, SHIRTS_CRD, "shirts.stable.example.com");
    for (name, color, size) in [("a", "blue", 1), ("b", "red", 2), ("c", "blue", 3)] {
        c.kubectl_stdin(&["apply", "-f", "-"], Some(&shirt(name, color, size)));
    }
    let names = |selector: &str| {
        c.kubectl(&["get", "shirts", "--field-selector", selector, "-o", "jsonpath={.items[*].metadata.name}"])
    };
    assert_eq!(names("spec.color=blue"), "a c");
    assert_eq!(names("spec.color!=blue"), "b");
    assert_eq!(names("spec.color=blue,spec.size=3"), "c");
    assert_eq!(names("metadata.name=b"), "b");

    // A watch selects the same way: it lists the blue ones, then the object that turns blue.
    let watch = c.kubectl_stream(&["get", "shirts", "--watch", "--field-selector", "spec.color=blue", "-o", "name"]);
    let next = || watch.next_line(Duration::from_secs(20)).unwrap_or_default();
    let mut listed = [next(), next()];
    listed.sort();
    c.kubectl_stdin(&["apply", "-f", "-"], Some(&shirt("b", "blue", 9)));
    let changed = next();
    drop(watch);
    assert_eq!(listed, ["shirt.stable.example.com/a", "shirt.stable.example.com/c"]);
    assert_eq!(changed, "shirt.stable.example.com/b");

    // Fields that are not selectable, and bad selectable fields, are refused.
    let err = c.kubectl_fails(&["get", "shirts", "--field-selector", "spec.nope=1"], None);
    assert!(err.contains("field label not supported: spec.nope"), "{err}");
    let bad = SHIRTS_CRD.replace("shirts", "hats").replace("Shirt", "Hat").replace(".spec.size", ".spec.missing");
    let err = c.kubectl_fails(&["apply", "-f", "-"], Some(&bad));
    assert!(err.contains("spec.versions[0].selectableFields[1].jsonPath: Invalid value: \".spec.missing\""), "{err}");
}
