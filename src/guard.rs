//! The once-only initialization registry, process-wide and in native memory: it outlives
//! `require.cache` resets, module re-evaluation and second copies of the JS wrapper. JS
//! values stay per thread (they cannot cross isolates); counts and ownership live here.

use std::collections::{HashMap, HashSet};

use once_cell::sync::Lazy;
use parking_lot::Mutex;
use serde_json::{json, Value};

#[derive(Debug, Default, Clone)]
struct KeyRecord {
    inits: u64,
    hits: u64,
    reinit_attempts: u64,
    failures: u64,
    init_ms: f64,
    heap_delta: i64,
    rss_delta: i64,
    process_scope: bool,
    /// Threads (isolates) holding a value or initializing one.
    threads: HashSet<u64>,
    /// Re-initialization attempts by call site.
    sites: HashMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginError {
    /// A `scope: 'process'` key another thread already owns.
    OwnedByAnotherThread,
}

#[derive(Debug, Default)]
pub struct Registry {
    keys: Mutex<HashMap<String, KeyRecord>>,
}

/// The figures measured around one initialization.
#[derive(Debug, Clone, Copy, Default)]
pub struct InitCost {
    pub duration_ms: f64,
    pub heap_delta: i64,
    pub rss_delta: i64,
}

/// What `reinit` reporting needs: the key's count, and this call site's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reinit {
    pub attempts: u64,
    pub from_site: u64,
}

impl Reinit {
    /// Reported on the 1st, 10th, 100th... attempt from a call site: a loop that
    /// re-initializes 10,000 times gives five events with the count, not 10,000 (or one).
    pub fn worth_reporting(self) -> bool {
        let mut n = self.from_site;
        while n >= 10 && n.is_multiple_of(10) {
            n /= 10;
        }
        n == 1
    }
}

impl Registry {
    /// A thread is about to run the factory for `key`.
    pub fn begin(&self, key: &str, thread: u64, process_scope: bool) -> Result<(), BeginError> {
        let mut keys = self.keys.lock();
        let record = keys.entry(key.to_string()).or_default();
        let others = record.threads.iter().any(|t| *t != thread);
        if (process_scope || record.process_scope) && others {
            return Err(BeginError::OwnedByAnotherThread);
        }
        record.process_scope |= process_scope;
        record.threads.insert(thread);
        Ok(())
    }

    /// The factory finished: success is counted with its cost; a failure frees the key.
    pub fn end(&self, key: &str, thread: u64, succeeded: bool, cost: InitCost) {
        let mut keys = self.keys.lock();
        let Some(record) = keys.get_mut(key) else {
            return;
        };
        if succeeded {
            record.inits += 1;
            record.init_ms += cost.duration_ms;
            record.heap_delta = record.heap_delta.saturating_add(cost.heap_delta);
            record.rss_delta = record.rss_delta.saturating_add(cost.rss_delta);
        } else {
            record.failures += 1;
            record.threads.remove(&thread);
        }
    }

    pub fn hit(&self, key: &str, count: u64) {
        if let Some(record) = self.keys.lock().get_mut(key) {
            record.hits += count;
        }
    }

    /// An initialized key was asked to initialize again (a new factory).
    pub fn reinit(&self, key: &str, call_site: &str) -> Reinit {
        let mut keys = self.keys.lock();
        let record = keys.entry(key.to_string()).or_default();
        record.reinit_attempts += 1;
        let from_site = record.sites.entry(call_site.to_string()).or_default();
        *from_site += 1;
        Reinit {
            attempts: record.reinit_attempts,
            from_site: *from_site,
        }
    }

    /// An unguarded initialization (`trackInit`): counted like an init; from the second
    /// one on it is also a reinit.
    pub fn track_init(&self, key: &str, thread: u64, cost: InitCost) -> u64 {
        let mut keys = self.keys.lock();
        let record = keys.entry(key.to_string()).or_default();
        record.inits += 1;
        record.init_ms += cost.duration_ms;
        record.heap_delta = record.heap_delta.saturating_add(cost.heap_delta);
        record.rss_delta = record.rss_delta.saturating_add(cost.rss_delta);
        record.threads.insert(thread);
        record.inits
    }

    /// A thread's isolate is gone: it no longer holds values.
    pub fn forget_thread(&self, thread: u64) {
        for record in self.keys.lock().values_mut() {
            record.threads.remove(&thread);
        }
    }

    /// Keys re-initialized at least once, with their call sites (most frequent first).
    pub fn reinits(&self) -> Value {
        let keys = self.keys.lock();
        let mut found: Vec<Value> = Vec::new();
        for (name, record) in keys.iter() {
            if record.reinit_attempts == 0 {
                continue;
            }
            let mut sites: Vec<(&String, &u64)> = record.sites.iter().collect();
            sites.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            found.push(json!({
                "key": name,
                "attempts": record.reinit_attempts,
                "inits": record.inits,
                "sites": sites.iter().take(5).map(|(site, count)| json!({ "site": site, "count": count })).collect::<Vec<_>>(),
            }));
        }
        found.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
        Value::Array(found)
    }

    pub fn stats(&self) -> Value {
        let keys = self.keys.lock();
        let mut names: Vec<&String> = keys.keys().collect();
        names.sort();
        Value::Array(
            names
                .into_iter()
                .map(|name| {
                    let r = &keys[name];
                    json!({
                        "key": name,
                        "inits": r.inits,
                        "hits": r.hits,
                        "reinitAttempts": r.reinit_attempts,
                        "failures": r.failures,
                        "initMs": (r.init_ms * 1000.0).round() / 1000.0,
                        "heapDelta": r.heap_delta,
                        "rssDelta": r.rss_delta,
                        "threads": r.threads.len(),
                        "scope": if r.process_scope { "process" } else { "thread" },
                    })
                })
                .collect(),
        )
    }
}

/// The one registry of this process.
pub static REGISTRY: Lazy<Registry> = Lazy::new(Registry::default);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inits_hits_and_failures() {
        let registry = Registry::default();
        registry.begin("db", 1, false).expect("free");
        registry.end("db", 1, false, InitCost::default());
        registry.begin("db", 1, false).expect("retry after failure");
        registry.end(
            "db",
            1,
            true,
            InitCost {
                duration_ms: 2.5,
                heap_delta: 1000,
                rss_delta: 4096,
            },
        );
        registry.hit("db", 1);
        registry.hit("db", 1);
        let stats = registry.stats();
        assert_eq!(stats[0]["inits"], 1);
        assert_eq!(stats[0]["failures"], 1);
        assert_eq!(stats[0]["hits"], 2);
        assert_eq!(stats[0]["heapDelta"], 1000);
        assert_eq!(stats[0]["initMs"], 2.5);
    }

    #[test]
    fn process_scope_refuses_a_second_thread() {
        let registry = Registry::default();
        registry.begin("pool", 1, true).expect("first thread");
        assert_eq!(
            registry.begin("pool", 2, true),
            Err(BeginError::OwnedByAnotherThread)
        );
        assert_eq!(
            registry.begin("pool", 2, false),
            Err(BeginError::OwnedByAnotherThread)
        );
        registry.begin("cache", 1, false).expect("thread scope");
        registry
            .begin("cache", 2, false)
            .expect("each thread its own value");
        registry.forget_thread(1);
        registry.begin("pool", 2, true).expect("the owner is gone");
    }

    #[test]
    fn reinit_counts_per_call_site_and_reports_at_powers_of_ten() {
        let registry = Registry::default();
        let first = registry.reinit("k", "a.js:1");
        assert_eq!(
            first,
            Reinit {
                attempts: 1,
                from_site: 1
            }
        );
        assert!(first.worth_reporting());
        let second = registry.reinit("k", "a.js:1");
        assert_eq!(
            second,
            Reinit {
                attempts: 2,
                from_site: 2
            }
        );
        assert!(!second.worth_reporting());
        assert_eq!(
            registry.reinit("k", "b.js:9"),
            Reinit {
                attempts: 3,
                from_site: 1
            }
        );
        let reported: Vec<u64> = (3..=1000)
            .map(|_| registry.reinit("k", "a.js:1"))
            .filter(|r| r.worth_reporting())
            .map(|r| r.from_site)
            .collect();
        assert_eq!(reported, vec![10, 100, 1000]);
    }
}
