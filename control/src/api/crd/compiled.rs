//! Per-thread caches of what a CRD schema compiles (CEL programs, `pattern` regexes), so a rule
//! or a pattern is compiled once per thread, not once per object checked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// At most this many entries per cache and thread; a full cache starts over (schemas hold few).
const CAPACITY: usize = 512;

/// Compiled forms by their source text. Meant for a `thread_local!`: neither `cel::Program` nor
/// the reference counts are shared between threads.
pub struct Compiled<T> {
    entries: RefCell<HashMap<String, Rc<T>>>,
}

impl<T> Default for Compiled<T> {
    fn default() -> Self {
        Self { entries: RefCell::new(HashMap::new()) }
    }
}

impl<T> Compiled<T> {
    /// The compiled form of `source`, compiled now if this cache has not seen it; `None` when it
    /// does not compile (failures are not cached: schemas with bad rules are refused anyway).
    pub fn get<E>(&self, source: &str, compile: impl FnOnce(&str) -> Result<T, E>) -> Option<Rc<T>> {
        if let Some(found) = self.entries.borrow().get(source) {
            return Some(Rc::clone(found));
        }
        let compiled = Rc::new(compile(source).ok()?);
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(source.to_string(), Rc::clone(&compiled));
        Some(compiled)
    }
}

thread_local! {
    static PATTERNS: Compiled<regex::Regex> = Compiled::default();
}

/// The regex of a schema's `pattern`, from this thread's cache.
pub fn pattern(source: &str) -> Option<Rc<regex::Regex>> {
    PATTERNS.with(|cache| cache.get(source, regex::Regex::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_compiled_once_and_failures_are_not_kept() {
        let cache: Compiled<String> = Compiled::default();
        let mut calls = 0;
        let mut compile = |s: &str| {
            calls += 1;
            if s == "bad" {
                Err(())
            } else {
                Ok(s.to_uppercase())
            }
        };
        assert_eq!(cache.get("a", &mut compile).as_deref().map(String::as_str), Some("A"));
        assert_eq!(cache.get("a", &mut compile).as_deref().map(String::as_str), Some("A"));
        assert!(cache.get("bad", &mut compile).is_none());
        assert!(cache.get("bad", &mut compile).is_none());
        assert_eq!(calls, 3);
    }

    #[test]
    fn patterns_match_and_bad_ones_are_none() {
        assert!(pattern("^[a-z]+$").is_some_and(|re| re.is_match("abc")));
        assert!(pattern("(").is_none());
    }
}
