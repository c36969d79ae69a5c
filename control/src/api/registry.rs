//! Object operations over the store: the Kubernetes rules for create, update, patch and delete,
//! independent of HTTP. The HTTP handlers and the in-process controllers both go through here,
//! never to the store directly.

use std::sync::Arc;

use serde_json::{json, Value};

use super::admission;
use super::crd;
use super::ephemeral_containers;
use super::error::{from_store, ApiError, ApiResult};
use super::object::{self, meta_mut};
use super::optimistic;
use super::prefix_cache::PrefixCache;
use super::resources::{ResourceInfo, Resources};
use super::selector::{FieldSelector, LabelSelector};
use super::watch_cache::WatchCache;
use super::webhooks::{self, Operation};
use crate::patch;
use crate::store::{KeyValue, ListOptions, Revision, Store, StoreError};

/// How unknown fields in a request body are treated (`fieldValidation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    #[default]
    Warn,
    Ignore,
}

/// What a `Binding` asks of the pod it binds: the node, and annotations to set on the pod.
pub struct Binding<'a> {
    pub node: &'a str,
    pub annotations: Option<&'a serde_json::Map<String, Value>>,
}

/// Options common to every write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    /// Who asks (sent to admission webhooks); `None` for in-process writers.
    pub user: Option<crate::auth::UserInfo>,
}

/// The result of a write: the object as stored, and warnings for the client.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    pub created: bool,
}

/// Options of a delete (`metav1.DeleteOptions`).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub propagation_policy: Option<String>,
    pub dry_run: bool,
    /// Who asks (sent to admission webhooks); `None` for in-process writers.
    pub user: Option<crate::auth::UserInfo>,
}

/// A list request, already parsed.
#[derive(Default)]
pub struct ListQuery {
    pub namespace: Option<String>,
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    /// Read at exactly this revision (`resourceVersionMatch=Exact`).
    pub exact_revision: Option<Revision>,
}

/// A list answer: items with `resourceVersion` set, the list revision, and the continue token.
pub struct Listed {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

/// One page of a list read in pages at one revision (a streamed list or a watch's initial
/// state): the matching items, the revision all pages are read at, and the key to continue after.
pub struct Page {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub next: Option<String>,
}

/// Objects as the API sees them, on top of a [`Store`].
pub struct Registry {
    pub store: Arc<dyn Store>,
    pub resources: Resources,
    pub cache: Arc<WatchCache>,
    /// The `tolerationSeconds` of the not-ready/unreachable tolerations every new pod gets
    /// (Kubernetes' `DefaultTolerationSeconds` admission).
    pub default_toleration_seconds: i64,
    /// The ClusterIPs and NodePorts Services hold.
    pub services: super::service_alloc::ServiceAllocator,
    /// The served resources, built-in and custom (kept by the CRD controller).
    pub custom: crd::Table,
    /// Admission webhooks.
    pub webhooks: webhooks::Webhooks,
    /// The LimitRanges and ResourceQuotas admission reads (see [`super::quota`]).
    pub policies: Arc<PrefixCache>,
    /// The Namespaces creates go into (a miss is read from the store: it may be brand new).
    namespaces: Arc<PrefixCache>,
    /// The remote APIServices requests are proxied to (kept by the `apiservice` controller).
    pub aggregator: super::aggregation::Aggregator,
}

/// A stored object as `ri` serves it (a custom object in the requested version).
pub(crate) fn decode(ri: &ResourceInfo, kv: &KeyValue) -> ApiResult<Value> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::Internal(format!("stored object {} does not decode: {e}", kv.key)))?;
    object::set_resource_version(&mut obj, kv.mod_revision);
    super::conversion::to_version(ri, &mut obj);
    Ok(obj)
}

/// The stored form: no `resourceVersion` (it is the store's revision); a custom object in its
/// storage version.
pub(crate) fn encode(ri: &ResourceInfo, obj: &Value) -> Vec<u8> {
    let has_rv = obj.pointer("/metadata/resourceVersion").is_some();
    if !has_rv && ri.conversion.is_none() && ri.custom.is_none() {
        // Nothing to take out or convert: written as it is, without a copy.
        return serde_json::to_vec(obj).unwrap_or_default();
    }
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    super::conversion::to_storage(ri, &mut obj);
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// Storage prefix of Namespaces.
pub(crate) const NAMESPACES: &str = "/registry/core/namespaces/";

/// How many names a `generateName` create tries before answering 409, as kube-apiserver
/// (1.31+, `RetryGenerateName`) does.
const GENERATE_NAME_ATTEMPTS: usize = 8;

#[cfg(test)]
thread_local! {
    /// Suffixes a test forces on the next generated names (to make collisions happen).
    static FORCED_SUFFIXES: std::cell::RefCell<std::collections::VecDeque<String>> = Default::default();
}

fn random_suffix() -> String {
    #[cfg(test)]
    if let Some(forced) = FORCED_SUFFIXES.with(|f| f.borrow_mut().pop_front()) {
        return forced;
    }
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn parse_revision(rv: &str) -> ApiResult<Revision> {
    rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))
}

fn encode_continue(revision: Revision, last_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE
        .encode(json!({"v": "meta.k8s.io/v1", "rv": revision, "start": last_key}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(Revision, String)> {
    use base64::Engine;
    let bad = || {
        ApiError::BadRequest(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".into(),
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, start.to_string()))
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, cache: Arc<WatchCache>) -> Self {
        let resources = Resources::default();
        let custom = crd::Table::new(&resources);
        let policies = Arc::new(PrefixCache::new(
            "limit ranges and quotas",
            &[super::quota::LIMIT_RANGES, super::quota::QUOTAS],
            Arc::clone(&store),
            Arc::clone(&cache),
        ));
        let namespaces =
            Arc::new(PrefixCache::new("namespaces", &[NAMESPACES], Arc::clone(&store), Arc::clone(&cache)));
        let webhooks = webhooks::Webhooks::new(Arc::clone(&store), Arc::clone(&cache), Arc::clone(&namespaces));
        Self {
            webhooks,
            policies,
            namespaces,
            store,
            resources,
            cache,
            default_toleration_seconds: 30,
            services: super::service_alloc::ServiceAllocator::new(Default::default()),
            custom,
            aggregator: Default::default(),
        }
    }

    /// Every resource served now: the built-ins and the custom resources of established CRDs.
    pub fn served(&self) -> Arc<Resources> {
        self.custom.served()
    }

    /// Hands out ClusterIPs and NodePorts from `network` (call [`Registry::repair_services`] next).
    pub fn with_service_network(mut self, network: super::service_network::ServiceNetwork) -> Self {
        self.services = super::service_alloc::ServiceAllocator::new(network);
        self
    }

    /// Rebuilds the ClusterIP and NodePort allocations from the stored Services (at start).
    pub async fn repair_services(&self) -> ApiResult<()> {
        let ri = self.resource("", "Service")?;
        let listed = self.list(ri, &ListQuery::default()).await?;
        self.services.rebuild(listed.items.iter());
        tracing::info!(services = listed.items.len(), "service allocations rebuilt from the store");
        Ok(())
    }

    /// Allocations for a Service about to be written (none for other kinds).
    fn allocate_service(
        &self,
        ri: &ResourceInfo,
        current: Option<&Value>,
        obj: &mut Value,
    ) -> ApiResult<Option<super::service_alloc::Reservation<'_>>> {
        if !(ri.group.is_empty() && ri.kind == "Service") {
            return Ok(None);
        }
        let reserved = match current {
            None => self.services.allocate_create(obj),
            Some(current) => self.services.allocate_update(current, obj),
        };
        reserved.map(Some).map_err(|causes| ApiError::invalid(ri.kind, object::name(obj), causes))
    }

    /// Frees what a deleted object held (a Service's ClusterIP and NodePorts).
    fn deleted(&self, ri: &ResourceInfo, obj: &Value) {
        if ri.group.is_empty() && ri.kind == "Service" {
            self.services.release(obj);
        }
    }

    /// Sets [`Registry::default_toleration_seconds`].
    pub fn with_default_toleration_seconds(mut self, seconds: i64) -> Self {
        self.default_toleration_seconds = seconds;
        self
    }

    pub fn resource(&self, group: &str, kind: &str) -> ApiResult<&ResourceInfo> {
        self.resources.by_kind(group, kind).ok_or(ApiError::NoSuchResource)
    }

    /// Reads one object.
    pub async fn get(&self, ri: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        let key = ri.key(ns, name);
        match self.store.get(&key).await? {
            Some(kv) => decode(ri, &kv),
            None => Err(ApiError::not_found(ri.group, ri.plural, name)),
        }
    }

    /// Lists objects, applying selectors and pagination.
    pub async fn list(&self, ri: &ResourceInfo, q: &ListQuery) -> ApiResult<Listed> {
        let prefix = ri.namespace_prefix(q.namespace.as_deref());
        let (mut revision, mut start_after) = match &q.continue_token {
            Some(token) => {
                let (rv, start) = decode_continue(token)?;
                (Some(rv), Some(start))
            }
            None => (q.exact_revision, None),
        };
        let want = q.limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        loop {
            let page = self
                .store
                .list(
                    &prefix,
                    ListOptions {
                        start_after: start_after.clone(),
                        limit: want.map(|w| w.saturating_sub(items.len()).max(1)),
                        revision,
                    },
                )
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } if q.continue_token.is_some() => {
                        ApiError::Gone { requested: revision.unwrap_or(0), oldest: 0 }
                    }
                    e => e.into(),
                })?;
            revision = Some(page.revision);
            let last_key = page.items.last().map(|kv| kv.key.clone());
            for kv in &page.items {
                let obj = decode(ri, kv)?;
                if self.matches(ri, &obj, q) {
                    items.push(obj);
                }
            }
            let full = want.is_some_and(|w| items.len() >= w);
            if !page.more || want.is_none() {
                return Ok(Listed { items, revision: page.revision, continue_token: None });
            }
            if full {
                // `remainingItemCount` is optional; it is left out rather than paid for with a count
                // of the whole prefix on every page.
                let token = last_key.map(|k| encode_continue(page.revision, &k));
                return Ok(Listed { items, revision: page.revision, continue_token: token });
            }
            start_after = last_key;
        }
    }

    /// Reads one page of at most `size` stored objects after `start_after` at `revision` (the
    /// current one when `None`), keeping those the query's selectors match. Reading a whole list
    /// page by page at the first page's revision holds at most one page in memory.
    pub async fn list_page(
        &self,
        ri: &ResourceInfo,
        q: &ListQuery,
        revision: Option<Revision>,
        start_after: Option<String>,
        size: usize,
    ) -> ApiResult<Page> {
        let prefix = ri.namespace_prefix(q.namespace.as_deref());
        let page =
            self.store.list(&prefix, ListOptions { start_after, limit: Some(size.max(1)), revision }).await.map_err(
                |e| match e {
                    StoreError::Compacted { requested, compacted } if revision.is_some() => {
                        ApiError::Gone { requested, oldest: compacted }
                    }
                    e => e.into(),
                },
            )?;
        let next = if page.more { page.items.last().map(|kv| kv.key.clone()) } else { None };
        let mut items = Vec::with_capacity(page.items.len());
        for kv in &page.items {
            let obj = decode(ri, kv)?;
            if self.matches(ri, &obj, q) {
                items.push(obj);
            }
        }
        Ok(Page { items, revision: page.revision, next })
    }

    /// Whether an object passes the query's namespace, label and field selectors.
    pub fn matches(&self, ri: &ResourceInfo, obj: &Value, q: &ListQuery) -> bool {
        if let Some(ns) = &q.namespace {
            if ri.namespaced && object::namespace(obj) != Some(ns.as_str()) {
                return false;
            }
        }
        if let Some(labels) = &q.labels {
            if !labels.matches(&object::labels(obj)) {
                return false;
            }
        }
        if let Some(fields) = &q.fields {
            let selected = match &ri.custom {
                Some(custom) => fields.matches_by(|field| custom.field_value(obj, field)),
                None => fields.matches_kind(ri.kind, obj),
            };
            if !selected {
                return false;
            }
        }
        true
    }

    /// The namespace a create goes into, refused when it is missing or terminating.
    async fn check_namespace_open(&self, ri: &ResourceInfo, ns: Option<&str>) -> ApiResult<Option<Value>> {
        let (true, Some(ns)) = (ri.namespaced, ns) else { return Ok(None) };
        let nsri = self.resource("", "Namespace")?;
        let key = nsri.key(None, ns);
        debug_assert!(key.starts_with(NAMESPACES));
        let namespace = match self.namespaces.get(&key).await {
            Ok(Some(namespace)) => (*namespace).clone(),
            _ => self.get(nsri, None, ns).await?,
        };
        if object::deletion_timestamp(&namespace).is_some() {
            return Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(Some(namespace))
    }

    /// Decodes through the typed struct, honouring `fieldValidation`.
    fn normalize(
        &self,
        ri: &ResourceInfo,
        obj: Value,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let (value, unknown) = (ri.normalize)(obj).map_err(|e| {
            ApiError::BadRequest(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                ri.kind, ri.version, ri.kind
            ))
        })?;
        if !unknown.is_empty() {
            let listed: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
            match opts.field_validation {
                FieldValidation::Strict => {
                    return Err(ApiError::BadRequest(format!("strict decoding error: {}", listed.join(", "))))
                }
                FieldValidation::Warn => warnings.extend(listed),
                FieldValidation::Ignore => {}
            }
        }
        Ok(value)
    }

    /// Checks `apiVersion`/`kind` of a body against the URL and fills them in when absent.
    fn check_type(&self, ri: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
        let Some(map) = obj.as_object_mut() else {
            return Err(ApiError::BadRequest("the request body must be a JSON or YAML object".into()));
        };
        let api_version = ri.api_version();
        match map.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != api_version => {
                return Err(ApiError::BadRequest(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )))
            }
            _ => {
                map.insert("apiVersion".into(), json!(api_version));
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            Some(k) if k != ri.kind => {
                return Err(ApiError::BadRequest(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    ri.kind
                )))
            }
            _ => {
                map.insert("kind".into(), json!(ri.kind));
            }
        }
        Ok(())
    }

    /// ServiceAccount admission on pod create: a named account must exist (`default` may still be
    /// on its way from the controller in a namespace made a moment ago); see
    /// [`service_account_admission`](super::service_account_admission).
    async fn admit_service_account(&self, ns: &str, pod: &mut Value) -> ApiResult<()> {
        use super::service_account_admission as sa;
        let account = sa::service_account_name(pod).to_string();
        let automount = match self.get(self.resource("", "ServiceAccount")?, Some(ns), &account).await {
            Ok(found) => found.get("automountServiceAccountToken").and_then(Value::as_bool),
            Err(ApiError::NotFound { .. }) if account == "default" => None,
            Err(ApiError::NotFound { .. }) => {
                return Err(ApiError::Forbidden(format!(
                    "pods \"{}\" is forbidden: error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found",
                    object::name(pod)
                )))
            }
            Err(e) => return Err(e),
        };
        sa::admit(pod, automount, &random_suffix());
        Ok(())
    }

    /// Pod Security admission from the namespace's labels: a pod is enforced (on create, and on
    /// an update that changes its spec), a workload's pod template only warned about.
    async fn pod_security(
        &self,
        ri: &ResourceInfo,
        ns: Option<&str>,
        namespace: Option<&Value>,
        obj: &Value,
        current: Option<&Value>,
    ) -> ApiResult<Vec<String>> {
        let Some(ns) = ns else { return Ok(Vec::new()) };
        let is_pod = ri.kind == "Pod" && ri.group.is_empty() && ri.custom.is_none();
        let template = if is_pod { None } else { super::pod_security::workload_template(ri.group, ri.kind, obj) };
        if !is_pod && template.is_none() {
            return Ok(Vec::new());
        }
        // An update that leaves the pod spec (or the template) as it was is not checked again.
        let unchanged = current.is_some_and(|c| match &template {
            None => c.get("spec") == obj.get("spec"),
            Some(t) => super::pod_security::workload_template(ri.group, ri.kind, c).as_ref() == Some(t),
        });
        if unchanged {
            return Ok(Vec::new());
        }
        // A create has read the namespace already.
        let namespace = match namespace {
            Some(namespace) => std::borrow::Cow::Borrowed(namespace),
            None => match self.get(self.resource("", "Namespace")?, None, ns).await {
                Ok(namespace) => std::borrow::Cow::Owned(namespace),
                Err(_) => return Ok(Vec::new()),
            },
        };
        match template {
            None => super::pod_security::admit(&namespace, obj),
            Some(template) => Ok(super::pod_security::admit_workload(&namespace, &template)),
        }
    }

    fn admit(
        &self,
        ri: &ResourceInfo,
        obj: Value,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        if let Some(custom) = &ri.custom {
            return crd::admit(ri, custom, obj, None, opts.field_validation, warnings);
        }
        if let Some(conversion) = ri.conversion {
            // Checked as sent, then defaulted and validated in the storage version, as
            // kube-apiserver does through its internal version.
            let obj = self.normalize(ri, obj, opts, warnings)?;
            let mut obj = (conversion.to_storage)(obj);
            admission::default(ri.kind, &mut obj);
            let (obj, _) = (conversion.storage_normalize)(obj).map_err(ApiError::BadRequest)?;
            let causes = admission::validate(ri.kind, ri.namespaced, &obj);
            if !causes.is_empty() {
                return Err(ApiError::invalid(ri.kind, object::name(&obj), causes));
            }
            return Ok((conversion.from_storage)(obj));
        }
        let mut obj = obj;
        admission::default(ri.kind, &mut obj);
        if crd::definition::is_crd(ri) {
            crd::definition::default(&mut obj);
        }
        if webhooks::validation::is_configuration(ri.group, ri.kind) {
            webhooks::validation::default(ri.kind, &mut obj);
        }
        if super::aggregation::validation::is_apiservice(ri) {
            super::aggregation::validation::default(&mut obj);
        }
        if super::flowcontrol::is_flowcontrol(ri) {
            super::flowcontrol::default(ri.kind, &mut obj);
        }
        let obj = self.normalize(ri, obj, opts, warnings)?;
        let mut causes = admission::validate(ri.kind, ri.namespaced, &obj);
        if crd::definition::is_crd(ri) {
            causes.extend(crd::definition::validate(&obj, &self.resources));
        }
        if webhooks::validation::is_configuration(ri.group, ri.kind) {
            causes.extend(webhooks::validation::validate(ri.kind, &obj));
        }
        if super::aggregation::validation::is_apiservice(ri) {
            causes.extend(super::aggregation::validation::validate(&obj));
        }
        if super::flowcontrol::is_flowcontrol(ri) {
            causes.extend(super::flowcontrol::validate(ri.kind, &obj));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(ri.kind, object::name(&obj), causes));
        }
        Ok(obj)
    }

    /// The admission webhooks of a create or update: the mutating ones (their changes validated
    /// again by [`Registry::admit`], or for an update by the update rules), then the validating ones.
    #[allow(clippy::too_many_arguments)]
    async fn admit_webhooks(
        &self,
        ri: &ResourceInfo,
        operation: Operation,
        subresource: Option<&str>,
        current: Option<&Value>,
        obj: Value,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let versions = webhooks::other_versions(&self.served(), ri);
        let name = object::name(&obj).to_string();
        let namespace = object::namespace(&obj).map(String::from);
        let base = webhooks::Attributes {
            namespace: namespace.as_deref().filter(|_| ri.namespaced),
            name: &name,
            old_object: current,
            dry_run: opts.dry_run,
            user: opts.user.as_ref(),
            ..webhooks::attributes(ri, operation, subresource.unwrap_or(""), &versions)
        };
        let obj =
            match self.webhooks.mutate(&webhooks::Attributes { object: Some(&obj), ..base.clone() }, warnings).await? {
                None => obj,
                Some(mutated) => match current {
                    None => self.admit(ri, mutated, opts, warnings)?,
                    Some(current) => self.merge_update(ri, current, mutated, subresource, opts, warnings)?,
                },
            };
        self.webhooks.validate(&webhooks::Attributes { object: Some(&obj), ..base }, warnings).await?;
        Ok(obj)
    }

    /// The admission webhooks of a delete (the object as `oldObject`; warnings have nowhere to go).
    async fn webhooks_on_delete(&self, ri: &ResourceInfo, current: &Value, opts: &DeleteOptions) -> ApiResult<()> {
        let versions = webhooks::other_versions(&self.served(), ri);
        let a = webhooks::Attributes {
            namespace: object::namespace(current).filter(|_| ri.namespaced),
            name: object::name(current),
            old_object: Some(current),
            dry_run: opts.dry_run,
            user: opts.user.as_ref(),
            ..webhooks::attributes(ri, Operation::Delete, "", &versions)
        };
        let mut warnings = Vec::new();
        self.webhooks.mutate(&a, &mut warnings).await?;
        self.webhooks.validate(&a, &mut warnings).await
    }

    /// Creates an object (POST).
    pub async fn create(
        &self,
        ri: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        self.check_type(ri, &mut obj)?;
        if ri.namespaced && ns.is_none() {
            // Stored under no namespace, no namespaced request could reach it.
            return Err(ApiError::MethodNotAllowed);
        }
        let mut warnings = Vec::new();
        let mut generate_prefix = None;
        {
            let meta = meta_mut(&mut obj);
            if ri.namespaced {
                match (meta.get("namespace").and_then(Value::as_str), ns) {
                    (Some(given), Some(url)) if !given.is_empty() && given != url => {
                        return Err(ApiError::BadRequest(
                            "the namespace of the provided object does not match the namespace sent on the request"
                                .into(),
                        ))
                    }
                    (_, Some(url)) => {
                        meta.insert("namespace".into(), json!(url));
                    }
                    _ => {}
                }
            } else {
                meta.remove("namespace");
            }
            let has_name = meta.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
            if !has_name {
                if let Some(prefix) = meta.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty()) {
                    let prefix = prefix.to_string();
                    meta.insert("name".into(), json!(format!("{prefix}{}", random_suffix())));
                    generate_prefix = Some(prefix);
                }
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
            meta.remove("resourceVersion");
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            meta.remove("selfLink");
            // Go leaves a zero `generation` out (`omitempty`): a client's 0 is no generation.
            if meta.get("generation").and_then(Value::as_i64) == Some(0) {
                meta.remove("generation");
            }
        }
        if crd::definition::is_crd(ri) {
            crd::definition::prepare_create(&mut obj);
        }
        if let Some(custom) = &ri.custom {
            if custom.terminating {
                return Err(ApiError::MethodNotAllowed);
            }
            if ri.has_status() {
                // As kube-apiserver: status is written only through /status.
                if let Some(map) = obj.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        if (obj.get("spec").is_some() || ri.custom.is_some()) && ri.kind != "Namespace" {
            meta_mut(&mut obj).insert("generation".into(), json!(1));
        }
        if ri.kind == "Pod" {
            crate::controllers::node_lifecycle::decide::add_default_tolerations(
                &mut obj,
                self.default_toleration_seconds,
            );
        }
        let mut obj = self.admit(ri, obj, opts, &mut warnings)?;
        if is_pod(ri) {
            let causes = ephemeral_containers::validate_create(&obj);
            if !causes.is_empty() {
                return Err(ApiError::invalid(ri.kind, object::name(&obj), causes));
            }
        }
        if is_node(ri) {
            crate::auth::node_restriction::admit_node_write(opts.user.as_ref(), None, &obj)?;
        }
        // Ownership is recorded on the admitted object: only fields the type knows are owned.
        if let Some(manager) = &opts.field_manager {
            obj = patch::apply::record_update(None, &obj, manager, &object::now_rfc3339());
        }
        let mut name = object::name(&obj).to_string();
        let namespace = self.check_namespace_open(ri, ns).await?;
        self.limit_range_defaults(ri, ns, &mut obj).await?;
        if let (true, Some(ns)) = (ri.kind == "Pod" && ri.group.is_empty(), ns) {
            self.admit_service_account(ns, &mut obj).await?;
            self.admit_priority(&mut obj).await?;
        }
        if ri.kind == "PersistentVolumeClaim" && ri.group.is_empty() {
            self.admit_storage_class(&mut obj).await?;
        }
        let mut obj = self.admit_webhooks(ri, Operation::Create, None, None, obj, opts, &mut warnings).await?;
        // Pod Security is a validating admission: it sees the object the mutating webhooks left.
        warnings.extend(self.pod_security(ri, ns, namespace.as_ref(), &obj, None).await?);
        self.limit_range_validate(ri, ns, &obj, None).await?;
        let reservation = self.allocate_service(ri, None, &mut obj)?;
        // ResourceQuota is the last admission step: it charges the quotas the write then uses.
        let charge = self.quota_charge(ri, ns, &obj, None, opts.dry_run).await?;
        if opts.dry_run {
            return Ok(Written { object: obj, warnings, created: true });
        }
        let mut attempt = 1;
        let kv = loop {
            match self.store.create(&ri.key(ns, &name), encode(ri, &obj)).await {
                Ok(kv) => break kv,
                // A generated name that is taken: another suffix, as kube-apiserver retries.
                Err(StoreError::AlreadyExists(_)) if generate_prefix.is_some() && attempt < GENERATE_NAME_ATTEMPTS => {
                    attempt += 1;
                    let prefix = generate_prefix.as_deref().unwrap_or_default();
                    name = format!("{prefix}{}", random_suffix());
                    tracing::debug!(resource = ri.plural, name, attempt, "generated name taken; retrying");
                    meta_mut(&mut obj).insert("name".into(), json!(name));
                }
                Err(e) => {
                    self.quota_refund(charge).await;
                    return Err(from_store(e, ri.group, ri.plural, &name));
                }
            }
        };
        if let Some(r) = reservation {
            r.commit();
        }
        object::set_resource_version(&mut obj, kv.mod_revision);
        tracing::debug!(resource = ri.plural, name, revision = kv.mod_revision, "created");
        Ok(Written { object: obj, warnings, created: true })
    }

    /// Read-modify-write of one object with optimistic concurrency. `change` turns the current
    /// object into the desired one; it is retried on a store conflict unless the caller pinned a
    /// `resourceVersion` (then 409). `subresource` is `None`, `Some("status")` and so on.
    pub async fn update_with<F>(
        &self,
        ri: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        opts: &WriteOptions,
        mut change: F,
    ) -> ApiResult<Written>
    where
        F: FnMut(&Value) -> ApiResult<Value>,
    {
        let key = ri.key(ns, name);
        for _attempt in 0..optimistic::MAX_ATTEMPTS {
            let (kv, current) = optimistic::read(&*self.store, ri, &key, name).await?;
            let mut desired = change(&current)?;
            self.check_type(ri, &mut desired)?;
            if let Some(rv) = object::resource_version(&desired) {
                if parse_revision(rv)? != kv.mod_revision {
                    return Err(from_store(
                        StoreError::Conflict { key: key.clone(), expected: 0, current: Box::new(kv) },
                        ri.group,
                        ri.plural,
                        name,
                    ));
                }
            }
            let mut warnings = Vec::new();
            let next = self.merge_update(ri, &current, desired, subresource, opts, &mut warnings)?;
            if is_node(ri) {
                crate::auth::node_restriction::admit_node_write(opts.user.as_ref(), Some(&current), &next)?;
            }
            let mut next = self
                .admit_webhooks(ri, Operation::Update, subresource, Some(&current), next, opts, &mut warnings)
                .await?;
            if subresource.is_none() {
                warnings.extend(self.pod_security(ri, ns, None, &next, Some(&current)).await?);
                self.limit_range_validate(ri, ns, &next, Some(&current)).await?;
            } else if subresource == Some(ephemeral_containers::SUBRESOURCE) {
                // As kube's Pod Security admission: a new ephemeral container is checked too.
                warnings.extend(self.pod_security(ri, ns, None, &next, Some(&current)).await?);
            }
            let reservation = match subresource {
                None => self.allocate_service(ri, Some(&current), &mut next)?,
                Some(_) => None,
            };
            if same_but_bookkeeping(&next, &current) {
                return Ok(Written { object: current, warnings, created: false });
            }
            let charge = match subresource {
                None => self.quota_charge(ri, ns, &next, Some(&current), opts.dry_run).await?,
                Some(_) => Default::default(),
            };
            if opts.dry_run {
                return Ok(Written { object: next, warnings, created: false });
            }
            let finished = object::deletion_timestamp(&next).is_some()
                && object::finalizers(&next).is_empty()
                && !awaits_kubelet(ri, &next);
            let result = if finished {
                self.store.delete(&key, Some(kv.mod_revision)).await
            } else {
                self.store.update(&key, encode(ri, &next), kv.mod_revision).await
            };
            match optimistic::written(result, ri, name) {
                Ok(Some(written)) => {
                    if finished {
                        drop(reservation);
                        self.deleted(ri, &current);
                    } else if let Some(r) = reservation {
                        r.commit();
                    }
                    let mut next = next;
                    object::set_resource_version(&mut next, written.mod_revision);
                    return Ok(Written { object: next, warnings, created: false });
                }
                // Lost to another writer: the charge is given back and the loop reads again.
                Ok(None) => self.quota_refund(charge).await,
                Err(e) => {
                    self.quota_refund(charge).await;
                    return Err(e);
                }
            }
        }
        Err(optimistic::too_many_writers(ri, name))
    }

    /// Applies the Kubernetes update rules: identity fields kept, status only through the status
    /// subresource, generation bumped on spec changes, admission run again.
    fn merge_update(
        &self,
        ri: &ResourceInfo,
        current: &Value,
        mut desired: Value,
        subresource: Option<&str>,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let name = object::name(current).to_string();
        let desired_name = object::name(&desired);
        if !desired_name.is_empty() && desired_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({desired_name}) does not match the name on the URL ({name})"
            )));
        }
        if subresource == Some(ephemeral_containers::SUBRESOURCE) {
            desired = ephemeral_containers::only_ephemeral(current, &desired);
        }
        if subresource == Some("status") {
            // Only status (and, as Kubernetes allows, nothing else) changes through /status.
            let mut next = current.clone();
            if let (Some(map), Some(status)) = (next.as_object_mut(), desired.get("status")) {
                map.insert("status".into(), status.clone());
            }
            desired = next;
        } else if subresource == Some(super::csr::SUBRESOURCE) {
            desired = super::csr::only_conditions(current, &desired);
        } else if ri.has_status() && subresource != Some("binding") {
            if let Some(map) = desired.as_object_mut() {
                match current.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
        }
        {
            let cur_meta = object::meta(current).clone();
            let meta = meta_mut(&mut desired);
            for field in [
                "uid",
                "creationTimestamp",
                "namespace",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match cur_meta.get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
            meta.insert("name".into(), json!(name));
            meta.remove("resourceVersion");
        }
        if ri.group.is_empty() && ri.kind == "Service" && subresource.is_none() {
            super::service_alloc::patch_allocated(current, &mut desired);
        }
        let mut next = match &ri.custom {
            // CEL transition rules compare with the object being replaced.
            Some(custom) => crd::admit(ri, custom, desired, Some(current), opts.field_validation, warnings)?,
            None => self.admit(ri, desired, opts, warnings)?,
        };
        if super::csr::is_csr(ri.group, ri.kind) && ri.custom.is_none() {
            let causes = super::csr::validate(current, &next);
            if !causes.is_empty() {
                return Err(ApiError::invalid(ri.kind, &name, causes));
            }
        }
        if is_pod(ri) {
            let causes = ephemeral_containers::validate_update(current, &next, subresource);
            if !causes.is_empty() {
                return Err(ApiError::invalid(ri.kind, &name, causes));
            }
        }
        if let Some(manager) = &opts.field_manager {
            next = patch::apply::record_update(Some(current), &next, manager, &object::now_rfc3339());
        }
        // A custom resource without a status subresource counts status changes too, as Kubernetes.
        let part = |o: &Value| {
            let mut p = object::spec_part(o);
            if let (true, Some(map), Some(status)) =
                (ri.custom.is_some() && !ri.has_status(), p.as_object_mut(), o.get("status"))
            {
                map.insert("status".into(), status.clone());
            }
            p
        };
        if part(&next) != part(current) && object::meta(current).get("generation").is_some() {
            let generation = object::meta(current).get("generation").and_then(Value::as_i64).unwrap_or(0);
            meta_mut(&mut next).insert("generation".into(), json!(generation.saturating_add(1)));
        }
        Ok(next)
    }

    /// Deletes one object, honouring finalizers and graceful pod deletion. Returns the object as
    /// it is after the call (deleted, or marked with `deletionTimestamp`).
    pub async fn delete(
        &self,
        ri: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        let key = ri.key(ns, name);
        for _attempt in 0..optimistic::MAX_ATTEMPTS {
            let (kv, current) = optimistic::read(&*self.store, ri, &key, name).await?;
            let conflict = |what: &str, want: &str, have: &str| ApiError::Conflict {
                group: ri.group.into(),
                resource: ri.plural.into(),
                name: name.into(),
                reason: format!("Precondition failed: {what}: {want}, {what} in object meta: {have}"),
            };
            if let Some(uid) = &opts.precondition_uid {
                let have = object::str_at(&current, &["metadata", "uid"]).unwrap_or("");
                if uid != have {
                    return Err(conflict("UID in precondition", uid, have));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version {
                if parse_revision(rv)? != kv.mod_revision {
                    return Err(conflict("ResourceVersion in precondition", rv, &kv.mod_revision.to_string()));
                }
            }
            self.webhooks_on_delete(ri, &current, opts).await?;
            let grace = self.grace_period(ri, &current, opts);
            let policy_finalizer = match opts.propagation_policy.as_deref() {
                Some("Foreground") => Some("foregroundDeletion"),
                Some("Orphan") => Some("orphan"),
                _ => None,
            };
            let must_wait = !object::finalizers(&current).is_empty()
                || grace > 0
                || ri.kind == "Namespace"
                || policy_finalizer.is_some();
            if must_wait {
                let mut next = current.clone();
                let meta = meta_mut(&mut next);
                let already = meta.contains_key("deletionTimestamp");
                let deadline = deletion_deadline(jiff::Timestamp::now(), grace);
                // A first deletion sets the deadline; a later one may only shorten it.
                let shorter =
                    || grace < meta.get("deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(i64::MAX);
                if !already || shorter() {
                    meta.insert("deletionTimestamp".into(), json!(deadline));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                } else {
                    return Ok((current, false));
                }
                if let (Some(finalizer), false) = (policy_finalizer, already) {
                    // The garbage collector acts on these and then removes them.
                    let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
                    if let Some(list) = finalizers.as_array_mut() {
                        if !list.iter().any(|f| f == finalizer) {
                            list.push(json!(finalizer));
                        }
                    }
                }
                if ri.kind == "Namespace" {
                    if let Some(status) = next.get_mut("status").and_then(Value::as_object_mut) {
                        status.insert("phase".into(), json!("Terminating"));
                    }
                }
                if opts.dry_run {
                    return Ok((next, false));
                }
                let result = self.store.update(&key, encode(ri, &next), kv.mod_revision).await;
                if let Some(written) = optimistic::written(result, ri, name)? {
                    object::set_resource_version(&mut next, written.mod_revision);
                    return Ok((next, false));
                }
                continue;
            }
            if opts.dry_run {
                return Ok((current, true));
            }
            let result = self.store.delete(&key, Some(kv.mod_revision)).await;
            if let Some(deleted) = optimistic::written(result, ri, name)? {
                self.deleted(ri, &current);
                let mut obj = current;
                object::set_resource_version(&mut obj, deleted.mod_revision);
                return Ok((obj, true));
            }
        }
        Err(optimistic::too_many_writers(ri, name))
    }

    /// Binds a pod to a node (the `binding` subresource), as kube-apiserver's binding storage
    /// does: a read-modify-write of the stored pod that sets `spec.nodeName`, the binding's
    /// annotations and `PodScheduled=True`. The Binding is what admission webhooks see
    /// ([`Self::admit_binding`], once, before the write), so the pod is not admitted again and its
    /// managed fields stay as they are. A pod being deleted or already bound is refused (409).
    pub async fn bind_pod(
        &self,
        ri: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        binding: &Binding<'_>,
        opts: &WriteOptions,
    ) -> ApiResult<()> {
        let key = ri.key(ns, name);
        let conflict = |reason: String| ApiError::Conflict {
            group: String::new(),
            resource: "pods".into(),
            name: name.into(),
            reason,
        };
        let admitted = self.admit_binding(ri, ns, name, binding, opts).await?;
        let node = object::str_at(&admitted, &["target", "name"])
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid("Binding", name, vec![("target.name".into(), "Required value".into())]))?;
        let annotations = binding_annotations(&admitted, name)?;
        for _attempt in 0..optimistic::MAX_ATTEMPTS {
            let (kv, current) = optimistic::read(&*self.store, ri, &key, name).await?;
            if object::deletion_timestamp(&current).is_some() {
                return Err(conflict(format!("pod {name} is being deleted, cannot be assigned to a host")));
            }
            if let Some(existing) = object::str_at(&current, &["spec", "nodeName"]).filter(|n| !n.is_empty()) {
                return Err(conflict(format!("pod {name} is already assigned to node \"{existing}\"")));
            }
            let mut next = current.clone();
            if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("nodeName".into(), json!(node));
            }
            if let Some(annotations) = annotations.filter(|a| !a.is_empty()) {
                let meta = meta_mut(&mut next);
                let target = meta.entry("annotations").or_insert_with(|| json!({}));
                if let Some(target) = target.as_object_mut() {
                    target.extend(annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            object::set_condition(&mut next, "PodScheduled", "True", None);
            if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            if opts.dry_run {
                return Ok(());
            }
            let result = self.store.update(&key, encode(ri, &next), kv.mod_revision).await;
            if optimistic::written(result, ri, name)?.is_some() {
                return Ok(());
            }
        }
        Err(optimistic::too_many_writers(ri, name))
    }

    /// The Binding as admission webhooks see it, as kube-apiserver sends it: kind `Binding`,
    /// resource `pods`, subresource `binding`, operation CREATE, no old object. A mutating webhook
    /// may change its target or annotations; the result is what binds.
    async fn admit_binding(
        &self,
        ri: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        binding: &Binding<'_>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let mut object = json!({
            "kind": "Binding",
            "apiVersion": "v1",
            "metadata": {"name": name},
            "target": {"kind": "Node", "apiVersion": "v1", "name": binding.node},
        });
        if let Some(ns) = ns {
            object["metadata"]["namespace"] = json!(ns);
        }
        if let Some(annotations) = binding.annotations.filter(|a| !a.is_empty()) {
            object["metadata"]["annotations"] = Value::Object(annotations.clone());
        }
        let a = webhooks::Attributes {
            kind: "Binding",
            namespace: ns,
            name,
            dry_run: opts.dry_run,
            user: opts.user.as_ref(),
            ..webhooks::attributes(ri, Operation::Create, "binding", &[])
        };
        let mut warnings = Vec::new();
        let object = match self
            .webhooks
            .mutate(&webhooks::Attributes { object: Some(&object), ..a.clone() }, &mut warnings)
            .await?
        {
            Some(mutated) => mutated,
            None => object,
        };
        self.webhooks.validate(&webhooks::Attributes { object: Some(&object), ..a }, &mut warnings).await?;
        Ok(object)
    }

    /// Removes an object at once, bypassing finalizers: only for the controller that owns the
    /// last step of its deletion (the namespace controller).
    pub async fn remove_now(&self, ri: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<()> {
        match self.store.delete(&ri.key(ns, name), None).await {
            Ok(kv) => {
                if let Ok(obj) = decode(ri, &kv) {
                    self.deleted(ri, &obj);
                }
                Ok(())
            }
            Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(from_store(e, ri.group, ri.plural, name)),
        }
    }

    /// Seconds a pod gets to stop: the request's, else the pod's own; zero for pods no node
    /// runs (nothing to wait for) and for every other kind.
    fn grace_period(&self, ri: &ResourceInfo, obj: &Value, opts: &DeleteOptions) -> i64 {
        if ri.kind != "Pod" || object::str_at(obj, &["spec", "nodeName"]).is_none_or(str::is_empty) {
            return 0;
        }
        if matches!(object::str_at(obj, &["status", "phase"]), Some("Succeeded" | "Failed")) {
            return 0;
        }
        let period = opts
            .grace_period_seconds
            .or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
            .unwrap_or(30);
        // As kube-apiserver's pod strategy: a negative period asks for the shortest graceful one.
        if period < 0 {
            1
        } else {
            period
        }
    }
}

/// The annotations an admitted Binding puts on its pod: a map of strings, whether the client or
/// a mutating webhook wrote them (a number or an object there would be stored into the pod and
/// break every typed reader of it).
fn binding_annotations<'a>(admitted: &'a Value, name: &str) -> ApiResult<Option<&'a serde_json::Map<String, Value>>> {
    let invalid = |field: String, msg: &str| ApiError::invalid("Binding", name, vec![(field, msg.into())]);
    match admitted.pointer("/metadata/annotations") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => match map.iter().find(|(_, v)| !v.is_string()) {
            Some((key, _)) => Err(invalid(format!("metadata.annotations[{key}]"), "Invalid value: must be a string")),
            None => Ok(Some(map)),
        },
        Some(_) => Err(invalid("metadata.annotations".into(), "Invalid value: must be a map of strings")),
    }
}

/// `now + grace` seconds as an RFC 3339 `deletionTimestamp`; a grace period past the largest
/// representable time saturates there instead of overflowing.
fn deletion_deadline(now: jiff::Timestamp, grace: i64) -> String {
    let deadline = now.checked_add(jiff::SignedDuration::from_secs(grace)).unwrap_or(if grace < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    deadline.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A pod with a node and a grace period left stays until the kubelet confirms.
fn awaits_kubelet(ri: &ResourceInfo, obj: &Value) -> bool {
    ri.kind == "Pod"
        && object::str_at(obj, &["spec", "nodeName"]).is_some_and(|n| !n.is_empty())
        && obj.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) > 0
}

/// The built-in core/v1 Node.
fn is_pod(ri: &ResourceInfo) -> bool {
    ri.group.is_empty() && ri.kind == "Pod" && ri.custom.is_none()
}

fn is_node(ri: &ResourceInfo) -> bool {
    ri.kind == "Node" && ri.group.is_empty() && ri.custom.is_none()
}

/// True when two objects differ at most in `metadata.resourceVersion` and
/// `metadata.managedFields` (a write that changes nothing else is not made), compared in place.
fn same_but_bookkeeping(a: &Value, b: &Value) -> bool {
    const BOOKKEEPING: [&str; 2] = ["resourceVersion", "managedFields"];
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a == b };
    // Every key of `a` (but `skipped`) is in `b` with the same value, and they have as many.
    let same = |a: &serde_json::Map<String, Value>, b: &serde_json::Map<String, Value>, skipped: &[&str]| {
        let kept = |m: &serde_json::Map<String, Value>| m.keys().filter(|k| !skipped.contains(&k.as_str())).count();
        kept(a) == kept(b) && a.iter().filter(|(k, _)| !skipped.contains(&k.as_str())).all(|(k, v)| b.get(k) == Some(v))
    };
    if !same(a, b, &["metadata"]) {
        return false;
    }
    match (a.get("metadata"), b.get("metadata")) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => same(x, y, &BOOKKEEPING),
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    async fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("state.db")).expect("open"));
        let cache = WatchCache::start(Arc::clone(&store)).await.expect("watch cache");
        let registry = Registry::new(store, cache);
        let ns = registry.resource("", "Namespace").expect("namespaces");
        let default = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        registry.create(ns, None, default, &WriteOptions::default()).await.expect("namespace");
        (dir, registry)
    }

    fn config_map(name: Option<&str>) -> Value {
        match name {
            Some(name) => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
            None => json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "web-"}}),
        }
    }

    fn force_suffixes(suffixes: &[&str]) {
        FORCED_SUFFIXES.with(|f| f.borrow_mut().extend(suffixes.iter().map(|s| s.to_string())));
    }

    #[tokio::test]
    async fn generated_name_collisions_are_retried() {
        let (_dir, registry) = registry().await;
        let ri = registry.resource("", "ConfigMap").expect("configmaps");
        let opts = WriteOptions::default();
        registry.create(ri, Some("default"), config_map(Some("web-aaaaa")), &opts).await.expect("first");
        registry.create(ri, Some("default"), config_map(Some("web-bbbbb")), &opts).await.expect("second");
        force_suffixes(&["aaaaa", "bbbbb", "ccccc"]);
        let w = registry.create(ri, Some("default"), config_map(None), &opts).await.expect("retried");
        assert_eq!(object::name(&w.object), "web-ccccc");
        let stored = registry.get(ri, Some("default"), "web-ccccc").await.expect("stored under the final name");
        assert_eq!(object::name(&stored), "web-ccccc");

        // Every attempt taken: 409 AlreadyExists after GENERATE_NAME_ATTEMPTS names, not before.
        force_suffixes(&["aaaaa"; GENERATE_NAME_ATTEMPTS]);
        force_suffixes(&["ddddd"]);
        let err = registry.create(ri, Some("default"), config_map(None), &opts).await.expect_err("exhausted");
        assert!(matches!(err, ApiError::AlreadyExists { .. }), "{err:?}");
        // The suffix after the exhausted ones was not consumed.
        let w = registry.create(ri, Some("default"), config_map(None), &opts).await.expect("next");
        assert_eq!(object::name(&w.object), "web-ddddd");
    }

    #[tokio::test]
    async fn creates_see_namespaces_the_cache_has_not_caught_up_with() {
        let (_dir, registry) = registry().await;
        let ri = registry.resource("", "ConfigMap").expect("configmaps");
        let opts = WriteOptions::default();
        // The namespace cache is primed by the first create.
        registry.create(ri, Some("default"), config_map(Some("first")), &opts).await.expect("primed");
        let err = registry.create(ri, Some("nowhere"), config_map(Some("a")), &opts).await.expect_err("no namespace");
        assert!(matches!(err, ApiError::NotFound { .. }), "{err:?}");
        // Written straight to the store and used at once: the cache may not have seen it yet,
        // and the store is asked instead.
        let ns = registry.resource("", "Namespace").expect("namespaces");
        let fresh = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}});
        registry.store.create(&ns.key(None, "fresh"), encode(ns, &fresh)).await.expect("stored");
        registry.create(ri, Some("fresh"), config_map(Some("a")), &opts).await.expect("found in the store");
        // One being deleted takes no new objects, cached or not.
        let mut closing = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "closing"}});
        meta_mut(&mut closing).insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
        registry.store.create(&ns.key(None, "closing"), encode(ns, &closing)).await.expect("stored");
        let err = registry.create(ri, Some("closing"), config_map(Some("a")), &opts).await.expect_err("terminating");
        assert!(matches!(err, ApiError::Forbidden(_)), "{err:?}");
    }

    #[tokio::test]
    async fn namespaced_objects_need_a_namespace() {
        let (_dir, registry) = registry().await;
        let ri = registry.resource("", "ConfigMap").expect("configmaps");
        let mut cm = config_map(Some("loose"));
        cm["metadata"]["namespace"] = json!("default");
        let err = registry.create(ri, None, cm, &WriteOptions::default()).await.expect_err("no namespace");
        assert!(matches!(err, ApiError::MethodNotAllowed), "{err:?}");
    }

    #[tokio::test]
    async fn huge_and_negative_grace_periods_never_panic() {
        let (_dir, registry) = registry().await;
        let ri = registry.resource("", "Pod").expect("pods");
        for (name, grace, want) in [("huge", i64::MAX, i64::MAX), ("negative", -5, 1), ("min", i64::MIN, 1)] {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
            registry.create(ri, Some("default"), pod, &WriteOptions::default()).await.expect("create");
            let opts = DeleteOptions { grace_period_seconds: Some(grace), ..Default::default() };
            let (obj, gone) = registry.delete(ri, Some("default"), name, &opts).await.expect("delete");
            assert!(!gone, "{name}: a bound pod waits for its kubelet");
            assert_eq!(obj.pointer("/metadata/deletionGracePeriodSeconds"), Some(&json!(want)), "{name}");
            let ts = object::deletion_timestamp(&obj).expect("deletionTimestamp").to_string();
            assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{name}: {ts}");
        }
        assert_eq!(deletion_deadline(jiff::Timestamp::UNIX_EPOCH, 30), "1970-01-01T00:00:30Z");
        assert!(deletion_deadline(jiff::Timestamp::now(), i64::MAX).starts_with("9999-12-"));
    }

    #[tokio::test]
    async fn a_binding_with_annotations_that_are_not_strings_is_invalid_and_binds_nothing() {
        let (_dir, registry) = registry().await;
        let ri = registry.resource("", "Pod").expect("pods");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        registry.create(ri, Some("default"), pod, &WriteOptions::default()).await.expect("create");
        let annotations = json!({"example.com/ok": "yes", "example.com/count": 3});
        let binding = Binding { node: "n1", annotations: annotations.as_object() };
        let err =
            registry.bind_pod(ri, Some("default"), "p", &binding, &WriteOptions::default()).await.expect_err("bad");
        assert!(matches!(err, ApiError::Invalid { .. }), "{err:?}");
        assert!(
            err.to_string().contains("metadata.annotations[example.com/count]: Invalid value: must be a string"),
            "{err}"
        );
        let pod = registry.get(ri, Some("default"), "p").await.expect("get");
        assert_eq!(pod.pointer("/spec/nodeName"), None, "{pod}");
        assert_eq!(pod.pointer("/metadata/annotations"), None, "{pod}");
        assert_eq!(binding_annotations(&json!({"metadata": {"annotations": null}}), "p").ok(), Some(None));
        let err = binding_annotations(&json!({"metadata": {"annotations": ["a"]}}), "p").expect_err("a list");
        assert!(err.to_string().contains("metadata.annotations: Invalid value: must be a map of strings"), "{err}");
    }

    #[tokio::test]
    async fn a_binding_sets_the_node_once_and_leaves_the_rest_of_the_pod_alone() {
        let (_dir, registry) = registry().await;
        let ri = registry.resource("", "Pod").expect("pods");
        let opts = WriteOptions { field_manager: Some("kubectl".into()), ..Default::default() };
        for name in ["p", "going"] {
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "finalizers": ["x/y"]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}});
            registry.create(ri, Some("default"), pod, &opts).await.expect("create");
        }
        let before = registry.get(ri, Some("default"), "p").await.expect("get");
        let annotations = json!({"example.com/why": "test"});
        let binding = Binding { node: "n1", annotations: annotations.as_object() };
        let bind_opts = WriteOptions { field_manager: Some("default-scheduler".into()), ..Default::default() };
        registry.bind_pod(ri, Some("default"), "p", &binding, &bind_opts).await.expect("bind");
        let pod = registry.get(ri, Some("default"), "p").await.expect("get");
        assert_eq!(pod["spec"]["nodeName"], "n1");
        assert_eq!(pod["metadata"]["annotations"]["example.com/why"], "test");
        let scheduled =
            pod["status"]["conditions"].as_array().expect("conditions").iter().find(|c| c["type"] == "PodScheduled");
        assert_eq!(scheduled.map(|c| &c["status"]), Some(&json!("True")), "{pod}");
        assert_eq!(
            pod["metadata"]["managedFields"], before["metadata"]["managedFields"],
            "a binding is not a field owner"
        );
        assert_eq!(pod["metadata"]["uid"], before["metadata"]["uid"]);

        let again = Binding { node: "n2", annotations: None };
        let err = registry.bind_pod(ri, Some("default"), "p", &again, &bind_opts).await.expect_err("bound");
        assert!(err.to_string().contains("pod p is already assigned to node \"n1\""), "{err}");
        registry.delete(ri, Some("default"), "going", &DeleteOptions::default()).await.expect("delete");
        let err = registry.bind_pod(ri, Some("default"), "going", &again, &bind_opts).await.expect_err("deleting");
        assert!(err.to_string().contains("pod going is being deleted, cannot be assigned to a host"), "{err}");
        let err = registry.bind_pod(ri, Some("default"), "nope", &again, &bind_opts).await.expect_err("missing");
        assert!(matches!(err, ApiError::NotFound { .. }), "{err:?}");
    }

    #[test]
    fn only_bookkeeping_differences_make_objects_the_same() {
        let a = json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "1", "managedFields": [1]}, "spec": {"x": 1}});
        let b = json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "2"}, "spec": {"x": 1}});
        assert!(same_but_bookkeeping(&a, &b) && same_but_bookkeeping(&b, &a));
        let c = json!({"kind": "Pod", "metadata": {"name": "a", "labels": {}}, "spec": {"x": 1}});
        assert!(!same_but_bookkeeping(&a, &c) && !same_but_bookkeeping(&c, &a));
        let d = json!({"kind": "Pod", "metadata": {"name": "a"}, "spec": {"x": 2}});
        assert!(!same_but_bookkeeping(&b, &d));
        let e = json!({"kind": "Pod", "metadata": {"name": "a"}, "spec": {"x": 1}, "status": {}});
        assert!(!same_but_bookkeeping(&b, &e) && !same_but_bookkeeping(&e, &b));
        assert!(!same_but_bookkeeping(&json!({"metadata": {}}), &json!({})));
    }
}
