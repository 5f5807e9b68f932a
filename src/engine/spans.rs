//! The `execution` tracing span: the parent of every `attempt` span an execution runs in this
//! process, open while the execution is in this process's memory (an attempt of it running,
//! its workflow future parked) and closed when it finishes or leaves memory (suspended to disk,
//! evicted, the engine closed). An execution that sleeps for days does not hold a span open;
//! when it wakes, a new `execution` span opens for it (with the `otel` feature, in the same
//! trace: its trace id is derived from the execution, see `otel.rs`).
//!
//! Whoever keeps the execution in memory holds an [`ExecutionHold`]; the span closes when the
//! last hold is dropped. With no subscriber interested in the span, nothing is tracked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracing::Span;

#[derive(Default)]
pub(crate) struct ExecutionSpans {
    map: Mutex<HashMap<u64, Entry>>,
    /// Distinguishes an entry from a later one of the same execution (a hold of a finished
    /// execution's span must not release its successor's).
    next_generation: std::sync::atomic::AtomicU64,
}

struct Entry {
    span: Span,
    holds: u32,
    generation: u64,
}

/// Keeps an execution's span open; see the module docs.
pub(crate) struct ExecutionHold {
    spans: Option<(Arc<ExecutionSpans>, u64, u64)>,
    span: Span,
}

impl ExecutionSpans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A hold on `execution_id`'s span, opening it if no hold is left (`function`: the
    /// execution's own function, a workflow's for its steps).
    pub(crate) fn hold(self: &Arc<Self>, execution_id: u64, function: &str, trace_seed: u64) -> ExecutionHold {
        // No subscriber wants info spans (the global max level says so): no lock, no map.
        if !tracing::level_enabled!(tracing::Level::INFO) {
            return ExecutionHold { spans: None, span: Span::none() };
        }
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(&execution_id) {
            entry.holds += 1;
            let held = Some((self.clone(), execution_id, entry.generation));
            return ExecutionHold { spans: held, span: entry.span.clone() };
        }
        let span = tracing::info_span!(parent: None, "execution", execution_id, function);
        if span.is_disabled() {
            return ExecutionHold { spans: None, span };
        }
        super::otel::join_execution_trace(&span, trace_seed, execution_id);
        let generation = self.next_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        map.insert(execution_id, Entry { span: span.clone(), holds: 1, generation });
        ExecutionHold { spans: Some((self.clone(), execution_id, generation)), span }
    }

    /// The execution finished: its span closes once the attempts still inside it end.
    pub(crate) fn finished(&self, execution_id: u64) {
        let entry = self.lock().remove(&execution_id);
        drop(entry); // Outside the lock: closing a span calls the subscriber.
    }

    /// The engine is closing.
    pub(crate) fn clear(&self) {
        let entries = std::mem::take(&mut *self.lock());
        drop(entries);
    }

    fn release(&self, execution_id: u64, generation: u64) {
        let mut map = self.lock();
        let Some(entry) = map.get_mut(&execution_id) else { return };
        if entry.generation != generation {
            return;
        }
        entry.holds -= 1;
        if entry.holds == 0 {
            let entry = map.remove(&execution_id);
            drop(map);
            drop(entry);
        }
    }
}

impl ExecutionHold {
    /// The execution's span, the parent of its attempts' spans.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }
}

impl Clone for ExecutionHold {
    fn clone(&self) -> Self {
        let Some((spans, execution_id, generation)) = &self.spans else {
            return ExecutionHold { spans: None, span: self.span.clone() };
        };
        let mut map = spans.lock();
        match map.get_mut(execution_id) {
            Some(entry) if entry.generation == *generation => {
                entry.holds += 1;
                ExecutionHold { spans: self.spans.clone(), span: self.span.clone() }
            }
            // Finished meanwhile: the clone keeps the span object but tracks nothing.
            _ => ExecutionHold { spans: None, span: self.span.clone() },
        }
    }
}

impl Drop for ExecutionHold {
    fn drop(&mut self) {
        if let Some((spans, execution_id, generation)) = self.spans.take() {
            spans.release(execution_id, generation);
        }
    }
}
