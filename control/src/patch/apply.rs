//! Server-side apply and field ownership (`metadata.managedFields`), simplified.
//!
//! Ownership is tracked in Kubernetes' `FieldsV1` format: `f:<field>` for a map field,
//! `k:{"<key>":<value>}` for an element of a merge list, `v:<value>` for an element of a set of
//! scalars, `".": {}` for a node owned in its own right and `{}` for an owned leaf. Which lists
//! merge, and by which key, comes from [`merge_key`], the table strategic merge patch uses; every
//! other list is atomic (one leaf).
//!
//! [`apply`] merges an applied configuration into the live object, reporting conflicts with other
//! managers and removing fields its manager stopped applying. [`record_update`] books the fields
//! an ordinary write changed to its manager.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::strategic::{merge_key, MergeKey, PatchError, MAX_DEPTH};

/// A field that the applied configuration would change although another manager owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The manager owning the field.
    pub manager: String,
    /// The field, as Kubernetes prints it: `.spec.containers[name="web"].image`.
    pub field_path: String,
}

/// Why a server-side apply was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change; retry with `force` to take them.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration is not a JSON object.
    #[error("applied configuration must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// The live object is not a JSON object.
    #[error("live object must be a JSON object, got {0}")]
    LiveNotAnObject(&'static str),
    /// A merge list the applied configuration cannot be merged by (shared with strategic merge).
    #[error(transparent)]
    Merge(#[from] PatchError),
    /// The applied configuration nests more than [`MAX_DEPTH`] levels.
    #[error("applied configuration nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Kubernetes' wording: `Apply failed with 1 conflict: conflict with "m": .spec.replicas`.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    let noun = if conflicts.len() == 1 { "conflict" } else { "conflicts" };
    let lines: Vec<String> =
        conflicts.iter().map(|c| format!("conflict with \"{}\": {}", c.manager, c.field_path)).collect();
    format!("Apply failed with {} {noun}: {}", conflicts.len(), lines.join("\n"))
}

/// Fields of `metadata` that are identity or bookkeeping, never owned nor applied.
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// Top-level fields that are never owned nor applied.
const UNTRACKED_TOP_LEVEL: &[&str] = &["apiVersion", "kind", "status"];

const OPERATION_APPLY: &str = "Apply";
const OPERATION_UPDATE: &str = "Update";

/// Server-side applies `applied` (a full or partial object of `kind`) as `manager` at time `now`
/// (RFC 3339) and returns the resulting object with updated `metadata.managedFields`.
///
/// With no `live` object the result is `applied` itself, owned wholly by `manager`. Otherwise
/// the configuration is merged into `live` (merge lists element-wise, scalar sets unioned, other
/// lists replaced), fields `manager` applied before but no longer does and nobody else owns are
/// removed, and live's identity metadata and status are kept. Changing a leaf another manager
/// owns is a conflict unless `force`, which moves the field to `manager`.
pub fn apply(
    kind: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let applied_map = applied.as_object().ok_or(ApplyError::NotAnObject(type_name(applied)))?;
    let schema = Schema { kind };
    let config = strip_untracked(applied_map);
    let new_set = schema.field_set(&config)?;
    let api_version = string_field(applied, "apiVersion")
        .or_else(|| live.and_then(|live| string_field(live, "apiVersion")))
        .unwrap_or_default();
    let own_entry = apply_entry(manager, api_version, now, &new_set);
    let Some(live) = live else {
        let mut created = applied.clone();
        set_managed_fields(&mut created, vec![own_entry]);
        return Ok(created);
    };
    if !live.is_object() {
        return Err(ApplyError::LiveNotAnObject(type_name(live)));
    }

    let mut entries = parse_entries(live);
    let own = entries.iter().position(|e| e.manager == manager && e.operation == OPERATION_APPLY);
    let conflicts = find_conflicts(&entries, own, &new_set, live, &config);
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts.into_iter().map(|found| found.conflict).collect()));
    }
    for found in &conflicts {
        if let Some(entry) = entries.get_mut(found.entry) {
            entry.remove_member(&found.path);
        }
    }

    let mut merged = live.clone();
    schema.merge_into(&mut merged, &config, &[], 0)?;
    let old_set = own.and_then(|i| entries.get(i)).map(|e| e.set.clone()).unwrap_or_default();
    let others = union_except(&entries, own);
    remove_unapplied(&mut merged, &old_set, &new_set, &others);

    let mut values: Vec<Value> = Vec::with_capacity(entries.len() + 1);
    let mut own_entry = Some(own_entry);
    for (index, entry) in entries.into_iter().enumerate() {
        if Some(index) == own {
            values.extend(own_entry.take());
        } else if let Some(value) = entry.into_value() {
            values.push(value);
        }
    }
    values.extend(own_entry);
    set_managed_fields(&mut merged, values);
    Ok(merged)
}

/// Records an ordinary write (create, update, patch) by `manager` at `now`: returns `new` with
/// `metadata.managedFields` updated so that `manager`'s `Update` entry owns every leaf that
/// changed from `live_old` to `new` (every field, on create), and no other manager keeps them.
/// Fields the write removed leave every manager's set.
///
/// Ownership comes from `live_old`'s managed fields (or, on create, from `new`'s own).
pub fn record_update(live_old: Option<&Value>, new: &Value, manager: &str, now: &str) -> Value {
    let Some(new_map) = new.as_object() else {
        return new.clone();
    };
    let live_old = live_old.filter(|old| old.is_object());
    let kind =
        string_field(new, "kind").or_else(|| live_old.and_then(|old| string_field(old, "kind"))).unwrap_or_default();
    let schema = Schema { kind };
    let new_config = strip_untracked(new_map);
    let old_config = live_old.and_then(Value::as_object).map(strip_untracked);
    let mut diff = Diff::default();
    schema.diff(old_config.as_ref(), &new_config, &[], &mut Vec::new(), 0, &mut diff);

    let changed = diff.changed.members();
    let removed = diff.removed.members();
    let mut entries = parse_entries(live_old.unwrap_or(new));
    for entry in &mut entries {
        for path in &removed {
            entry.remove_subtree(path);
        }
        if !(entry.manager == manager && entry.operation == OPERATION_UPDATE) {
            for path in &changed {
                entry.remove_member(path);
            }
        }
    }
    let own = entries.iter_mut().find(|e| e.manager == manager && e.operation == OPERATION_UPDATE);
    match own {
        Some(entry) if !changed.is_empty() => {
            entry.set.union(&diff.changed);
            entry.dirty = true;
            entry.raw.insert("time".to_owned(), Value::String(now.to_owned()));
        }
        Some(_) => {}
        None if !changed.is_empty() => {
            let api_version = string_field(new, "apiVersion").unwrap_or_default();
            let entry = entry_value(manager, OPERATION_UPDATE, api_version, now, &diff.changed);
            entries.extend(Entry::parse(&entry));
        }
        None => {}
    }

    let mut result = new.clone();
    let values: Vec<Value> = entries.into_iter().filter_map(Entry::into_value).collect();
    if values.is_empty() {
        if let Some(Value::Object(metadata)) = result.get_mut("metadata") {
            metadata.remove("managedFields");
        }
    } else {
        set_managed_fields(&mut result, values);
    }
    result
}

/// The JSON type of `value`, for error messages.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `value[field]` if it is a string.
fn string_field<'v>(value: &'v Value, field: &str) -> Option<&'v str> {
    value.get(field).and_then(Value::as_str)
}

/// The object without its untracked fields (identity, bookkeeping, status): what is owned and
/// what apply merges.
fn strip_untracked(object: &Map<String, Value>) -> Value {
    let mut config = object.clone();
    for field in UNTRACKED_TOP_LEVEL {
        config.remove(*field);
    }
    if let Some(Value::Object(metadata)) = config.get_mut("metadata") {
        for field in UNTRACKED_METADATA {
            metadata.remove(*field);
        }
    }
    if config.get("metadata").is_some_and(|m| m.as_object().is_some_and(Map::is_empty)) {
        config.remove("metadata");
    }
    Value::Object(config)
}

/// Sets `object.metadata.managedFields`, creating `metadata` if needed.
fn set_managed_fields(object: &mut Value, entries: Vec<Value>) {
    let Value::Object(map) = object else {
        return;
    };
    let metadata = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    if let Value::Object(metadata) = metadata {
        metadata.insert("managedFields".to_owned(), Value::Array(entries));
    }
}

/// A `managedFields` entry value.
fn entry_value(manager: &str, operation: &str, api_version: &str, now: &str, set: &FieldSet) -> Value {
    let mut entry = Map::new();
    entry.insert("manager".to_owned(), Value::String(manager.to_owned()));
    entry.insert("operation".to_owned(), Value::String(operation.to_owned()));
    if !api_version.is_empty() {
        entry.insert("apiVersion".to_owned(), Value::String(api_version.to_owned()));
    }
    entry.insert("time".to_owned(), Value::String(now.to_owned()));
    entry.insert("fieldsType".to_owned(), Value::String("FieldsV1".to_owned()));
    entry.insert("fieldsV1".to_owned(), set.to_fields_v1());
    Value::Object(entry)
}

/// The `managedFields` entry of an apply by `manager`.
fn apply_entry(manager: &str, api_version: &str, now: &str, set: &FieldSet) -> Value {
    entry_value(manager, OPERATION_APPLY, api_version, now, set)
}

/// One parsed `managedFields` entry.
struct Entry {
    /// The entry as stored, rewritten only if its set changed.
    raw: Map<String, Value>,
    manager: String,
    operation: String,
    set: FieldSet,
    /// Whether `set` differs from `raw.fieldsV1`.
    dirty: bool,
}

impl Entry {
    /// Parses an entry; `None` for entries that are not objects.
    fn parse(value: &Value) -> Option<Self> {
        let raw = value.as_object()?.clone();
        let text = |field: &str| raw.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        let set = raw.get("fieldsV1").map(FieldSet::from_fields_v1).unwrap_or_default();
        Some(Self { manager: text("manager"), operation: text("operation"), set, raw, dirty: false })
    }

    /// Disowns the field at `path`.
    fn remove_member(&mut self, path: &[String]) {
        self.dirty |= self.set.remove_member(path);
    }

    /// Disowns the field at `path` and everything below it.
    fn remove_subtree(&mut self, path: &[String]) {
        self.dirty |= self.set.remove_subtree(path);
    }

    /// The entry to store; `None` once changes left it owning nothing.
    fn into_value(mut self) -> Option<Value> {
        if self.dirty {
            if self.set.is_empty() {
                return None;
            }
            self.raw.insert("fieldsV1".to_owned(), self.set.to_fields_v1());
        }
        Some(Value::Object(self.raw))
    }
}

/// The parsed `metadata.managedFields` of `object`.
fn parse_entries(object: &Value) -> Vec<Entry> {
    object
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

/// Everything owned by the entries other than `except`.
fn union_except(entries: &[Entry], except: Option<usize>) -> FieldSet {
    let mut union = FieldSet::default();
    for (index, entry) in entries.iter().enumerate() {
        if Some(index) != except {
            union.union(&entry.set);
        }
    }
    union
}

/// A conflict found in one entry: the entry's index, the field in `FieldsV1` steps, and the
/// conflict as reported.
struct FoundConflict {
    entry: usize,
    path: Vec<String>,
    conflict: Conflict,
}

/// The leaves `new_set` applies with a value differing from live that other entries own.
fn find_conflicts(
    entries: &[Entry],
    own: Option<usize>,
    new_set: &FieldSet,
    live: &Value,
    config: &Value,
) -> Vec<FoundConflict> {
    let leaves = new_set.leaves();
    let mut conflicts = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        if Some(index) == own {
            continue;
        }
        for leaf in leaves.iter().filter(|leaf| entry.set.has_member(leaf)) {
            let Some(live_value) = lookup(live, leaf) else {
                continue;
            };
            if lookup(config, leaf) != Some(live_value) {
                conflicts.push(FoundConflict {
                    entry: index,
                    path: leaf.clone(),
                    conflict: Conflict { manager: entry.manager.clone(), field_path: render_steps(leaf) },
                });
            }
        }
    }
    conflicts
}

/// Removes from `merged` what `old` owned but `new` does not apply and no one else owns, then
/// the maps and lists that removal left empty.
fn remove_unapplied(merged: &mut Value, old: &FieldSet, new: &FieldSet, others: &FieldSet) {
    for path in old.members() {
        if new.get(&path).is_some() || others.get(&path).is_some() || is_merge_key_field(&path) {
            continue;
        }
        if remove_at(merged, &path) {
            prune_empty_ancestors(merged, &path, new, others);
        }
    }
}

/// Whether `path` ends at the merge-key field of a merge-list element (which stays with it).
fn is_merge_key_field(path: &[String]) -> bool {
    let [.., parent, last] = path else {
        return false;
    };
    match (Step::parse(parent), Step::parse(last)) {
        (Some(Step::Key(key)), Some(Step::Field(field))) => key.contains_key(&field),
        _ => false,
    }
}

/// Removes the containers above `path` that are now empty and that nobody else claims.
fn prune_empty_ancestors(merged: &mut Value, path: &[String], new: &FieldSet, others: &FieldSet) {
    let mut end = path.len().saturating_sub(1);
    while end > 0 {
        let ancestor = &path[..end];
        if new.get(ancestor).is_some() || others.get(ancestor).is_some() {
            return;
        }
        if !lookup(merged, ancestor).is_some_and(is_empty_container) {
            return;
        }
        remove_at(merged, ancestor);
        end -= 1;
    }
}

/// Whether `value` is `{}` or `[]`.
fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(list) => list.is_empty(),
        _ => false,
    }
}

/// A tree of owned fields in `FieldsV1` form, keyed by `f:`, `k:`, `v:` (or `i:`) steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldSet {
    /// Whether the node itself is owned (a leaf, or `"."` on an inner node).
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// An owned leaf.
    fn leaf() -> Self {
        Self { member: true, children: BTreeMap::new() }
    }

    /// An inner node with `children`, or an owned leaf when there are none.
    fn branch_or_leaf(children: BTreeMap<String, FieldSet>) -> Self {
        Self { member: children.is_empty(), children }
    }

    /// Whether the set owns nothing.
    fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Parses a `fieldsV1` value; anything unexpected counts as a leaf.
    fn from_fields_v1(value: &Value) -> Self {
        Self::parse_node(value, 0)
    }

    fn parse_node(value: &Value, depth: usize) -> Self {
        let Some(map) = value.as_object().filter(|_| depth <= MAX_DEPTH) else {
            return Self::leaf();
        };
        let mut node = Self { member: map.is_empty() || map.contains_key("."), children: BTreeMap::new() };
        for (key, child) in map {
            if key != "." {
                node.children.insert(key.clone(), Self::parse_node(child, depth + 1));
            }
        }
        node
    }

    /// The set as a `fieldsV1` value.
    fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".to_owned(), Value::Object(Map::new()));
        }
        for (key, child) in &self.children {
            map.insert(key.clone(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    /// The node at `path`, if the set has one (owned or with owned descendants).
    fn get(&self, path: &[String]) -> Option<&FieldSet> {
        path.iter().try_fold(self, |node, step| node.children.get(step))
    }

    /// Whether the field at `path` is owned.
    fn has_member(&self, path: &[String]) -> bool {
        self.get(path).is_some_and(|node| node.member)
    }

    /// Owns the field at `path` (not the root).
    fn insert(&mut self, path: &[String]) {
        if path.is_empty() {
            return;
        }
        let mut node = self;
        for step in path {
            node = node.children.entry(step.clone()).or_default();
        }
        node.member = true;
    }

    /// Adds everything `other` owns.
    fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (key, child) in &other.children {
            self.children.entry(key.clone()).or_default().union(child);
        }
    }

    /// Disowns the field at `path`, keeping what is owned below it; returns whether it was
    /// owned.
    fn remove_member(&mut self, path: &[String]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            let was = self.member;
            self.member = false;
            return was;
        };
        let Some(child) = self.children.get_mut(first) else {
            return false;
        };
        let removed = child.remove_member(rest);
        if child.is_empty() {
            self.children.remove(first);
        }
        removed
    }

    /// Disowns the field at `path` and everything below it; returns whether anything was owned.
    fn remove_subtree(&mut self, path: &[String]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        if rest.is_empty() {
            return self.children.remove(first).is_some();
        }
        let Some(child) = self.children.get_mut(first) else {
            return false;
        };
        let removed = child.remove_subtree(rest);
        if child.is_empty() {
            self.children.remove(first);
        }
        removed
    }

    /// Paths of every owned node, parents before children.
    fn members(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out, false);
        out
    }

    /// Paths of the owned nodes with nothing below them.
    fn leaves(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out, true);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>, leaves_only: bool) {
        if self.member && !prefix.is_empty() && (!leaves_only || self.children.is_empty()) {
            out.push(prefix.clone());
        }
        for (key, child) in &self.children {
            prefix.push(key.clone());
            child.collect(prefix, out, leaves_only);
            prefix.pop();
        }
    }
}

/// One parsed `FieldsV1` step.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `f:<name>`: a map field.
    Field(String),
    /// `k:{...}`: the merge-list element with these key values.
    Key(Map<String, Value>),
    /// `v:<json>`: the set element equal to this value.
    Value(Value),
    /// `i:<n>`: a list index.
    Index(usize),
}

impl Step {
    /// Parses a step; `None` if malformed.
    fn parse(raw: &str) -> Option<Self> {
        let (prefix, rest) = raw.split_at_checked(2)?;
        match prefix {
            "f:" => Some(Self::Field(rest.to_owned())),
            "k:" => serde_json::from_str(rest).ok().map(Self::Key),
            "v:" => serde_json::from_str(rest).ok().map(Self::Value),
            "i:" => rest.parse().ok().map(Self::Index),
            _ => None,
        }
    }

    /// Whether list `element` is the one this (`k:` or `v:`) step names.
    fn matches(&self, element: &Value) -> bool {
        match self {
            Self::Key(keys) => keys.iter().all(|(k, v)| element.get(k) == Some(v)),
            Self::Value(value) => element == value,
            Self::Field(_) | Self::Index(_) => false,
        }
    }

    /// The step as Kubernetes prints field paths.
    fn render(&self) -> String {
        match self {
            Self::Field(name) => format!(".{name}"),
            Self::Key(keys) => {
                let pairs: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", pairs.join(","))
            }
            Self::Value(value) => format!("[={value}]"),
            Self::Index(index) => format!("[{index}]"),
        }
    }
}

/// Renders a path of raw steps, e.g. `.spec.containers[name="web"].image`.
fn render_steps(path: &[String]) -> String {
    path.iter().map(|raw| Step::parse(raw).map_or_else(|| format!(".{raw}"), |step| step.render())).collect()
}

/// The `f:` step for map field `name`.
fn field_step(name: &str) -> String {
    format!("f:{name}")
}

/// The `k:` step for the merge-list element whose `key` is `value`.
fn key_step(key: &str, value: &Value) -> String {
    let mut keys = Map::new();
    keys.insert(key.to_owned(), value.clone());
    format!("k:{}", Value::Object(keys))
}

/// The `v:` step for set element `value`.
fn value_step(value: &Value) -> String {
    format!("v:{value}")
}

/// The child of `value` a step names.
fn step_into<'v>(value: &'v Value, step: &Step) -> Option<&'v Value> {
    match step {
        Step::Field(name) => value.as_object()?.get(name),
        Step::Key(_) | Step::Value(_) => value.as_array()?.iter().find(|e| step.matches(e)),
        Step::Index(index) => value.as_array()?.get(*index),
    }
}

/// The value at `path` (raw steps) inside `value`.
fn lookup<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |node, raw| step_into(node, &Step::parse(raw)?))
}

/// The value at `path` inside `value`, mutably.
fn lookup_mut<'v>(value: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    let mut node = value;
    for raw in path {
        let step = Step::parse(raw)?;
        node = match step {
            Step::Field(name) => node.as_object_mut()?.get_mut(&name)?,
            Step::Key(_) | Step::Value(_) => node.as_array_mut()?.iter_mut().find(|e| step.matches(e))?,
            Step::Index(index) => node.as_array_mut()?.get_mut(index)?,
        };
    }
    Some(node)
}

/// Removes the value at `path` from `value`; returns whether something was removed.
fn remove_at(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parent)) = path.split_last() else {
        return false;
    };
    let (Some(parent), Some(step)) = (lookup_mut(value, parent), Step::parse(last)) else {
        return false;
    };
    match (parent, step) {
        (Value::Object(map), Step::Field(name)) => map.remove(&name).is_some(),
        (Value::Array(list), Step::Index(index)) if index < list.len() => {
            list.remove(index);
            true
        }
        (Value::Array(list), step @ (Step::Key(_) | Step::Value(_))) => {
            let before = list.len();
            list.retain(|element| !step.matches(element));
            list.len() != before
        }
        _ => false,
    }
}

/// Renders field names as `.spec.containers`.
fn render_names(path: &[&str]) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    path.iter().map(|name| format!(".{name}")).collect()
}

/// `path` with `name` appended.
fn child_names<'a>(path: &[&'a str], name: &'a str) -> Vec<&'a str> {
    let mut child = Vec::with_capacity(path.len() + 1);
    child.extend_from_slice(path);
    child.push(name);
    child
}

/// Fields changed and removed by an update.
#[derive(Default)]
struct Diff {
    changed: FieldSet,
    removed: FieldSet,
}

/// List semantics for one kind of object.
struct Schema<'k> {
    kind: &'k str,
}

impl Schema<'_> {
    /// The fields `config` sets.
    fn field_set(&self, config: &Value) -> Result<FieldSet, ApplyError> {
        match config {
            Value::Object(map) => Ok(FieldSet { member: false, children: self.object_fields(map, &[], 0)? }),
            _ => Ok(FieldSet::default()),
        }
    }

    /// The owned nodes of each non-null field of `map`.
    fn object_fields<'a>(
        &self,
        map: &'a Map<String, Value>,
        path: &[&'a str],
        depth: usize,
    ) -> Result<BTreeMap<String, FieldSet>, ApplyError> {
        check_depth(depth)?;
        let mut children = BTreeMap::new();
        for (name, value) in map {
            if let Some(node) = self.value_node(value, &child_names(path, name), depth + 1)? {
                children.insert(field_step(name), node);
            }
        }
        Ok(children)
    }

    /// The owned node for `value` at `path`; `None` for null (not set).
    fn value_node<'a>(&self, value: &'a Value, path: &[&'a str], depth: usize) -> Result<Option<FieldSet>, ApplyError> {
        check_depth(depth)?;
        let node = match value {
            Value::Null => return Ok(None),
            Value::Object(map) => FieldSet::branch_or_leaf(self.object_fields(map, path, depth)?),
            Value::Array(list) if !list.is_empty() => match merge_key(self.kind, path) {
                Some(MergeKey::Key(key)) => FieldSet::branch_or_leaf(self.keyed_elements(list, key, path, depth)?),
                Some(MergeKey::PrimitiveSet) => FieldSet::branch_or_leaf(set_elements(list, path)?),
                None => FieldSet::leaf(),
            },
            _ => FieldSet::leaf(),
        };
        Ok(Some(node))
    }

    /// The owned nodes of the elements of a merge list.
    fn keyed_elements<'a>(
        &self,
        list: &'a [Value],
        key: &'static str,
        path: &[&'a str],
        depth: usize,
    ) -> Result<BTreeMap<String, FieldSet>, ApplyError> {
        let mut children: BTreeMap<String, FieldSet> = BTreeMap::new();
        for element in list {
            let (map, value) = keyed_element(element, key, path)?;
            let node = FieldSet { member: true, children: self.object_fields(map, path, depth + 1)? };
            children.entry(key_step(key, value)).or_default().union(&node);
        }
        Ok(children)
    }

    /// Merges applied `source` into `target` (live) at `path`.
    fn merge_into<'a>(
        &self,
        target: &mut Value,
        source: &'a Value,
        path: &[&'a str],
        depth: usize,
    ) -> Result<(), ApplyError> {
        check_depth(depth)?;
        match source {
            Value::Null => {}
            Value::Object(fields) => {
                if !target.is_object() {
                    *target = Value::Object(Map::new());
                }
                if let Value::Object(target) = target {
                    for (name, value) in fields.iter().filter(|(_, v)| !v.is_null()) {
                        let slot = target.entry(name.clone()).or_insert(Value::Null);
                        self.merge_into(slot, value, &child_names(path, name), depth + 1)?;
                    }
                }
            }
            Value::Array(list) => match merge_key(self.kind, path) {
                Some(MergeKey::Key(key)) => self.merge_keyed(target, list, key, path, depth)?,
                Some(MergeKey::PrimitiveSet) => merge_set(target, list, path)?,
                None => *target = source.clone(),
            },
            scalar => *target = scalar.clone(),
        }
        Ok(())
    }

    /// Merges the elements of an applied merge list into the live list by `key`.
    fn merge_keyed<'a>(
        &self,
        target: &mut Value,
        list: &'a [Value],
        key: &'static str,
        path: &[&'a str],
        depth: usize,
    ) -> Result<(), ApplyError> {
        if !target.is_array() {
            *target = Value::Array(Vec::new());
        }
        let Value::Array(target) = target else {
            return Ok(());
        };
        for element in list {
            let (_, value) = keyed_element(element, key, path)?;
            if let Some(existing) = target.iter_mut().find(|e| e.get(key) == Some(value)) {
                self.merge_into(existing, element, path, depth + 1)?;
            } else {
                let mut fresh = Value::Null;
                self.merge_into(&mut fresh, element, path, depth + 1)?;
                target.push(fresh);
            }
        }
        Ok(())
    }

    /// Records in `out` what changed and what was removed going from `old` to `new` at `path`
    /// (`steps` is the same path in `FieldsV1` steps).
    fn diff<'a>(
        &self,
        old: Option<&Value>,
        new: &'a Value,
        path: &[&'a str],
        steps: &mut Vec<String>,
        depth: usize,
        out: &mut Diff,
    ) {
        if depth > MAX_DEPTH {
            if old != Some(new) {
                out.changed.insert(steps);
            }
            return;
        }
        match new {
            Value::Null => {}
            Value::Object(map) if !map.is_empty() => {
                self.diff_object(old.and_then(Value::as_object), map, path, steps, depth, out);
            }
            Value::Array(list) if !list.is_empty() => {
                let old_list = old.and_then(Value::as_array).map(Vec::as_slice);
                match merge_key(self.kind, path) {
                    Some(MergeKey::Key(key)) if all_keyed(list, key) => {
                        self.diff_keyed(old_list, list, key, path, steps, depth, out);
                    }
                    Some(MergeKey::PrimitiveSet) if list.iter().all(is_scalar) => {
                        diff_set(old_list.unwrap_or_default(), list, steps, out);
                    }
                    _ => diff_leaf(old, new, steps, out),
                }
            }
            _ => diff_leaf(old, new, steps, out),
        }
    }

    /// [`Self::diff`] for a non-empty map.
    fn diff_object<'a>(
        &self,
        old: Option<&Map<String, Value>>,
        new: &'a Map<String, Value>,
        path: &[&'a str],
        steps: &mut Vec<String>,
        depth: usize,
        out: &mut Diff,
    ) {
        for (name, value) in new.iter().filter(|(_, v)| !v.is_null()) {
            steps.push(field_step(name));
            let old_value = old.and_then(|old| old.get(name));
            self.diff(old_value, value, &child_names(path, name), steps, depth + 1, out);
            steps.pop();
        }
        for (name, value) in old.into_iter().flatten() {
            if !value.is_null() && new.get(name).is_none_or(Value::is_null) {
                steps.push(field_step(name));
                out.removed.insert(steps);
                steps.pop();
            }
        }
    }

    /// [`Self::diff`] for a merge list whose elements all carry `key`.
    #[allow(clippy::too_many_arguments)]
    fn diff_keyed<'a>(
        &self,
        old: Option<&[Value]>,
        new: &'a [Value],
        key: &str,
        path: &[&'a str],
        steps: &mut Vec<String>,
        depth: usize,
        out: &mut Diff,
    ) {
        let find = |list: &[Value], value: &Value| -> bool { list.iter().any(|e| e.get(key) == Some(value)) };
        for element in new {
            let Some(value) = element.get(key) else {
                continue;
            };
            let old_element = old.unwrap_or_default().iter().find(|e| e.get(key) == Some(value));
            steps.push(key_step(key, value));
            if old_element.is_none() {
                out.changed.insert(steps);
            }
            self.diff(old_element, element, path, steps, depth + 1, out);
            steps.pop();
        }
        for element in old.unwrap_or_default() {
            if let Some(value) = element.get(key).filter(|value| !find(new, value)) {
                steps.push(key_step(key, value));
                out.removed.insert(steps);
                steps.pop();
            }
        }
    }
}

/// Fails once recursion goes past [`MAX_DEPTH`].
fn check_depth(depth: usize) -> Result<(), ApplyError> {
    if depth > MAX_DEPTH {
        return Err(ApplyError::TooDeep);
    }
    Ok(())
}

/// Whether `value` is neither a map nor a list.
fn is_scalar(value: &Value) -> bool {
    !value.is_object() && !value.is_array()
}

/// Whether every element of `list` is an object carrying `key`.
fn all_keyed(list: &[Value], key: &str) -> bool {
    list.iter().all(|e| e.get(key).is_some())
}

/// A merge-list element as a map, with its key value.
fn keyed_element<'v>(
    element: &'v Value,
    key: &'static str,
    path: &[&str],
) -> Result<(&'v Map<String, Value>, &'v Value), ApplyError> {
    let map = element
        .as_object()
        .ok_or_else(|| ApplyError::Merge(PatchError::ElementNotAnObject { path: render_names(path), key }))?;
    let value =
        map.get(key).ok_or_else(|| ApplyError::Merge(PatchError::MissingMergeKey { path: render_names(path), key }))?;
    Ok((map, value))
}

/// The owned leaves of a set of scalars.
fn set_elements(list: &[Value], path: &[&str]) -> Result<BTreeMap<String, FieldSet>, ApplyError> {
    let mut children = BTreeMap::new();
    for value in list.iter().filter(|v| !v.is_null()) {
        if !is_scalar(value) {
            return Err(ApplyError::Merge(PatchError::NotAScalar { path: render_names(path) }));
        }
        children.insert(value_step(value), FieldSet::leaf());
    }
    Ok(children)
}

/// Unions an applied set of scalars into the live list.
fn merge_set(target: &mut Value, list: &[Value], path: &[&str]) -> Result<(), ApplyError> {
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let Value::Array(target) = target else {
        return Ok(());
    };
    for value in list.iter().filter(|v| !v.is_null()) {
        if !is_scalar(value) {
            return Err(ApplyError::Merge(PatchError::NotAScalar { path: render_names(path) }));
        }
        if !target.contains(value) {
            target.push(value.clone());
        }
    }
    Ok(())
}

/// [`Schema::diff`] for a set of scalars: new values change, missing ones are removed.
fn diff_set(old: &[Value], new: &[Value], steps: &mut Vec<String>, out: &mut Diff) {
    for value in new.iter().filter(|v| !old.contains(v)) {
        steps.push(value_step(value));
        out.changed.insert(steps);
        steps.pop();
    }
    for value in old.iter().filter(|v| !new.contains(v)) {
        steps.push(value_step(value));
        out.removed.insert(steps);
        steps.pop();
    }
}

/// [`Schema::diff`] for a leaf: owned by the writer if its value changed.
fn diff_leaf(old: Option<&Value>, new: &Value, steps: &[String], out: &mut Diff) {
    if old != Some(new) {
        out.changed.insert(steps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2025-01-01T00:00:00Z";
    const T1: &str = "2025-01-01T00:01:00Z";

    fn config(replicas: u64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "replicas": replicas,
                "template": {"spec": {"containers": [{"name": "web", "image": image}]}}
            }
        })
    }

    fn entries(object: &Value) -> &Vec<Value> {
        object["metadata"]["managedFields"].as_array().expect("managedFields")
    }

    fn entry<'v>(object: &'v Value, manager: &str) -> &'v Value {
        entries(object).iter().find(|e| e["manager"] == manager).expect("entry for manager")
    }

    fn owns(object: &Value, manager: &str, path: &[&str]) -> bool {
        let set = FieldSet::from_fields_v1(&entry(object, manager)["fieldsV1"]);
        let path: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        set.has_member(&path)
    }

    /// A live object created by `kubectl create` (an Update by another manager).
    fn live_from_other_manager() -> Value {
        let created = config(2, "nginx:1");
        let mut live = record_update(None, &created, "kubectl-client-side-apply", T0);
        live["metadata"]["uid"] = json!("u-1");
        live["metadata"]["resourceVersion"] = json!("7");
        live
    }

    #[test]
    fn create_owns_every_applied_field() {
        let applied = config(2, "nginx:1");
        let out = apply("Deployment", None, &applied, "mgr", false, T0).expect("create");
        let entries = entries(&out);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["manager"], "mgr");
        assert_eq!(entries[0]["operation"], "Apply");
        assert_eq!(entries[0]["apiVersion"], "apps/v1");
        assert_eq!(entries[0]["time"], T0);
        assert_eq!(entries[0]["fieldsType"], "FieldsV1");
        assert_eq!(
            entries[0]["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:template": {"f:spec": {"f:containers": {
                        "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}
                    }}}
                }
            })
        );
        let mut expected = applied.clone();
        expected["metadata"]["managedFields"] = out["metadata"]["managedFields"].clone();
        assert_eq!(out, expected);
    }

    #[test]
    fn reapply_removes_fields_no_longer_applied() {
        let first = apply("Deployment", None, &config(2, "nginx:1"), "mgr", false, T0).expect("create");
        let mut second = config(2, "nginx:1");
        second["metadata"]["labels"] = json!({"app": "web"});
        second["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["-v"]);
        let out = apply("Deployment", Some(&first), &second, "mgr", false, T1).expect("re-apply");
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["args"], json!(["-v"]));
        assert_eq!(entries(&out).len(), 1);
        assert_eq!(entry(&out, "mgr")["time"], T1);
        assert!(!owns(&out, "mgr", &["f:metadata", "f:labels", "f:tier"]));

        // Dropping the whole labels map removes it, not just its keys.
        let mut third = second.clone();
        if let Some(metadata) = third["metadata"].as_object_mut() {
            metadata.remove("labels");
        }
        let out = apply("Deployment", Some(&out), &third, "mgr", false, T1).expect("re-apply");
        assert!(out["metadata"].get("labels").is_none());
        assert_eq!(out["metadata"]["name"], "web");
    }

    #[test]
    fn fields_owned_by_others_survive_reapply() {
        let live = live_from_other_manager();
        // Same values as live: shared ownership, no conflict.
        let mut partial = config(2, "nginx:1");
        partial["spec"]["template"]["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
        let out = apply("Deployment", Some(&live), &partial, "mgr", false, T1).expect("apply");
        let mut smaller = config(2, "nginx:1");
        if let Some(metadata) = smaller["metadata"].as_object_mut() {
            metadata.remove("labels");
        }
        let out = apply("Deployment", Some(&out), &smaller, "mgr", false, T1).expect("apply");
        // Labels stay: the other manager owns them. The env var only mgr owned goes.
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "tier": "front"}));
        let container = &out["spec"]["template"]["spec"]["containers"][0];
        assert!(container.get("env").is_none(), "{container}");
        assert_eq!(container["name"], "web");
        assert_eq!(out["metadata"]["uid"], "u-1");
        assert_eq!(out["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn conflict_with_other_manager_is_an_error() {
        let live = live_from_other_manager();
        let err = apply("Deployment", Some(&live), &config(3, "nginx:1"), "mgr", false, T1).expect_err("conflict");
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\": .spec.replicas"
        );
        let err = apply("Deployment", Some(&live), &config(3, "nginx:2"), "mgr", false, T1).expect_err("conflicts");
        let ApplyError::Conflicts(conflicts) = &err else {
            panic!("expected conflicts, got {err}");
        };
        assert_eq!(conflicts.len(), 2);
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: \
             conflict with \"kubectl-client-side-apply\": .spec.replicas\n\
             conflict with \"kubectl-client-side-apply\": .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn force_takes_ownership() {
        let live = live_from_other_manager();
        let out = apply("Deployment", Some(&live), &config(3, "nginx:1"), "mgr", true, T1).expect("forced apply");
        assert_eq!(out["spec"]["replicas"], 3);
        assert!(owns(&out, "mgr", &["f:spec", "f:replicas"]));
        assert!(!owns(&out, "kubectl-client-side-apply", &["f:spec", "f:replicas"]));
        // Unchanged fields stay shared.
        assert!(owns(&out, "kubectl-client-side-apply", &["f:metadata", "f:labels", "f:app"]));
        assert!(owns(&out, "mgr", &["f:metadata", "f:labels", "f:app"]));
        // A later apply of the same value by mgr no longer conflicts.
        apply("Deployment", Some(&out), &config(3, "nginx:1"), "mgr", false, T1).expect("no conflict");
    }

    #[test]
    fn apply_merges_lists_by_key() {
        let live = live_from_other_manager();
        let mut live = live;
        live["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "web", "image": "nginx:1"}, {"name": "sidecar", "image": "busybox"}]);
        let applied = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "finalizers": ["x"]},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80}]}]}}}
        });
        let out = apply("Deployment", Some(&live), &applied, "mgr", false, T1).expect("apply");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "busybox"}
            ])
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["x"]));
        assert!(owns(&out, "mgr", &["f:metadata", "f:finalizers", "v:\"x\""]));
    }

    #[test]
    fn invalid_input_is_an_error() {
        assert!(matches!(apply("Pod", None, &json!([1]), "mgr", false, T0), Err(ApplyError::NotAnObject(_))));
        let missing = json!({"spec": {"containers": [{"image": "x"}]}});
        let err = apply("Pod", None, &missing, "mgr", false, T0).expect_err("no merge key");
        assert_eq!(err.to_string(), "element of list .spec.containers is missing its merge key \"name\"");
        let mut deep = json!(1);
        for _ in 0..(MAX_DEPTH * 2) {
            deep = json!({"a": deep});
        }
        assert!(matches!(apply("Pod", None, &deep, "mgr", false, T0), Err(ApplyError::TooDeep)));
        assert_eq!(record_update(None, &json!("x"), "mgr", T0), json!("x"));
        let _ = record_update(None, &deep, "mgr", T0);
    }

    #[test]
    fn record_update_moves_changed_fields() {
        let live = apply("Deployment", None, &config(2, "nginx:1"), "mgr", false, T0).expect("create");
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(5);
        new["metadata"]["labels"]["tier"] = Value::Null;
        let out = record_update(Some(&live), &new, "kubectl-scale", T1);
        let scale = entry(&out, "kubectl-scale");
        assert_eq!(scale["operation"], "Update");
        assert_eq!(scale["time"], T1);
        assert_eq!(scale["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        assert!(!owns(&out, "mgr", &["f:spec", "f:replicas"]));
        assert!(!owns(&out, "mgr", &["f:metadata", "f:labels", "f:tier"]));
        assert!(owns(&out, "mgr", &["f:metadata", "f:labels", "f:app"]));
        assert_eq!(out["spec"]["replicas"], 5);

        // Now re-applying the old replica count conflicts with the scaler.
        let err = apply("Deployment", Some(&out), &config(2, "nginx:1"), "mgr", false, T1).expect_err("conflict");
        assert!(err.to_string().contains("\"kubectl-scale\": .spec.replicas"), "{err}");
    }

    #[test]
    fn record_update_on_create_owns_everything() {
        let out = record_update(None, &config(1, "a"), "creator", T0);
        assert!(owns(&out, "creator", &["f:spec", "f:replicas"]));
        assert!(owns(&out, "creator", &["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"web\"}"]));
        // A no-op update adds no entry.
        let again = record_update(Some(&out), &out, "other", T1);
        assert_eq!(entries(&again).len(), 1);
    }
}
