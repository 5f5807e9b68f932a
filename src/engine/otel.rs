//! OpenTelemetry (feature `otel`): every `execution` span of one execution joins one trace,
//! whatever process or restart it runs in, so a trace backend shows the execution's whole life
//! as one trace, its attempts inside.
//!
//! An execution's trace id is the file's random `trace_seed` (high 64 bits) and the execution
//! id (low 64 bits), so it needs no record of its own and two files never share one. Each
//! `execution` span's parent is a virtual root span of that trace (span id: the execution id),
//! never exported itself: backends show it as the trace's missing root.
//!
//! Without the feature this is a no-op and nothing of OpenTelemetry is linked.

use tracing::Span;

/// The trace id (32 hex digits, as OpenTelemetry prints it) of `execution_id`'s spans.
pub(super) fn trace_id_hex(trace_seed: u64, execution_id: u64) -> String {
    format!("{:032x}", trace_id(trace_seed, execution_id))
}

fn trace_id(trace_seed: u64, execution_id: u64) -> u128 {
    (u128::from(trace_seed) << 64) | u128::from(execution_id)
}

/// Places a new `execution` span in the execution's own trace (when the subscriber has the
/// `tracing-opentelemetry` layer; otherwise nothing happens).
#[cfg(feature = "otel")]
pub(super) fn join_execution_trace(span: &Span, trace_seed: u64, execution_id: u64) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let root = SpanContext::new(
        TraceId::from(trace_id(trace_seed, execution_id)),
        SpanId::from(execution_id.max(1)),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    // `LayerNotFound` (no OpenTelemetry layer installed) leaves the span as it is.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(root));
}

#[cfg(not(feature = "otel"))]
pub(super) fn join_execution_trace(_span: &Span, _trace_seed: u64, _execution_id: u64) {}
