//! OpenTelemetry export without the OpenTelemetry SDK: a `tracing` layer that gives every span
//! W3C ids and ships finished spans as OTLP/HTTP JSON to `$OTEL_EXPORTER_OTLP_ENDPOINT` (the
//! collector's `/v1/traces`). A span with a `traceparent` field continues that remote trace;
//! one with a `trace_link` field links to it. mend's job spans carry both, set from the
//! enqueue's trace context stored with the job, so one trace shows enqueue → attempts.
//!
//! Export runs on its own thread with a bounded queue: a slow or absent collector costs
//! dropped spans (counted in the logs), never a slower job.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mend::trace::{hex, TraceParent};
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Finished spans waiting for export before new ones are dropped.
const QUEUE: usize = 65_536;
/// Spans per export request.
const BATCH: usize = 512;
/// Longest a finished span waits for its batch.
const EVERY: Duration = Duration::from_millis(200);

/// The trace identity of a live span (kept in the span's extensions).
#[derive(Debug, Clone)]
struct SpanCtx {
    tp: TraceParent,
    parent: Option<[u8; 8]>,
    links: Vec<TraceParent>,
    start: SystemTime,
    attrs: Vec<(String, String)>,
}

struct Finished {
    name: &'static str,
    ctx: SpanCtx,
    end: SystemTime,
}

enum Msg {
    Span(Finished),
    Flush(mpsc::Sender<()>),
}

static SENDER: OnceLock<SyncSender<Msg>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The traces URL (`…/v1/traces`).
    pub traces_url: String,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
}

impl OtlpConfig {
    /// From the standard environment variables; `None` when no endpoint is set.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let traces_url = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => url,
            None => format!(
                "{}/v1/traces",
                var("OTEL_EXPORTER_OTLP_ENDPOINT")?.trim_end_matches('/')
            ),
        };
        let headers = var("OTEL_EXPORTER_OTLP_HEADERS")
            .map(|h| {
                h.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Some(OtlpConfig {
            traces_url,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "mend".into()),
            headers,
        })
    }
}

/// The layer; add it to the subscriber. Starts the export thread.
pub fn layer(config: OtlpConfig) -> std::io::Result<OtlpLayer> {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("mend-otlp".into())
        .spawn(move || export_loop(config, rx))?;
    let _ = SENDER.set(tx.clone());
    Ok(OtlpLayer { tx })
}

/// Sends what is queued now and waits for it (at most `limit`): call before exiting.
pub fn flush(limit: Duration) {
    if let Some(tx) = SENDER.get() {
        let (done_tx, done_rx) = mpsc::channel();
        if tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(limit);
        }
    }
}

/// The `traceparent` of the current span, when the layer is installed.
pub fn current_traceparent() -> Option<String> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            let ext = span.extensions();
            ext.get::<SpanCtx>().map(|c| c.tp.to_string())
        })
        .flatten()
}

/// See the module docs.
pub struct OtlpLayer {
    tx: SyncSender<Msg>,
}

#[derive(Default)]
struct Fields {
    traceparent: Option<TraceParent>,
    link: Option<TraceParent>,
    attrs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "traceparent" => self.traceparent = TraceParent::parse(value),
            "trace_link" => self.link = TraceParent::parse(value),
            name => self.attrs.push((name.to_owned(), value.to_owned())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // The exporter's own HTTP client must not feed spans back into the exporter.
        let target = span.metadata().target();
        if ["hyper", "reqwest", "h2", "rustls"]
            .iter()
            .any(|t| target.starts_with(t))
        {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent_ctx = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanCtx>().map(|c| c.tp));
        let (tp, parent) = match (fields.traceparent, parent_ctx) {
            (Some(remote), _) => (remote.child(), Some(remote.span_id)),
            (None, Some(local)) => (local.child(), Some(local.span_id)),
            (None, None) => (TraceParent::new_root(), None),
        };
        span.extensions_mut().insert(SpanCtx {
            tp,
            parent,
            links: fields.link.into_iter().collect(),
            start: SystemTime::now(),
            attrs: fields.attrs,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut ext = span.extensions_mut();
        if let Some(c) = ext.get_mut::<SpanCtx>() {
            c.attrs.extend(fields.attrs);
            c.links.extend(fields.link);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(c) = span.extensions_mut().remove::<SpanCtx>() else {
            return;
        };
        let finished = Finished {
            name: span.metadata().name(),
            ctx: c,
            end: SystemTime::now(),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Span(finished)) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

fn span_json(s: &Finished) -> Value {
    let attrs: Vec<Value> = s
        .ctx
        .attrs
        .iter()
        .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
        .collect();
    let links: Vec<Value> = s
        .ctx
        .links
        .iter()
        .map(|l| json!({"traceId": hex(&l.trace_id), "spanId": hex(&l.span_id)}))
        .collect();
    let mut span = json!({
        "traceId": hex(&s.ctx.tp.trace_id),
        "spanId": hex(&s.ctx.tp.span_id),
        "name": s.name,
        "kind": 1,
        "startTimeUnixNano": nanos(s.ctx.start),
        "endTimeUnixNano": nanos(s.end),
        "attributes": attrs,
        "links": links,
    });
    if let Some(parent) = s.ctx.parent {
        span["parentSpanId"] = json!(hex(&parent));
    }
    span
}

fn export_loop(config: OtlpConfig, rx: Receiver<Msg>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // The client's connector needs the runtime's reactor from the start.
    let _runtime = rt.enter();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut batch: Vec<Finished> = Vec::new();
    let mut warned_at = 0u64;
    loop {
        let msg = rx.recv_timeout(EVERY);
        let mut flush_reply = None;
        match msg {
            Ok(Msg::Span(s)) => {
                batch.push(s);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(Msg::Span(s)) => batch.push(s),
                        Ok(Msg::Flush(reply)) => {
                            flush_reply = Some(reply);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if batch.len() < BATCH && flush_reply.is_none() {
                    continue;
                }
            }
            Ok(Msg::Flush(reply)) => flush_reply = Some(reply),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if !batch.is_empty() {
            let body = json!({"resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": config.service_name}}]},
                "scopeSpans": [{"scope": {"name": "mend", "version": env!("CARGO_PKG_VERSION")},
                                "spans": batch.iter().map(span_json).collect::<Vec<_>>()}],
            }]});
            let mut req = client.post(&config.traces_url).json(&body);
            for (k, v) in &config.headers {
                req = req.header(k, v);
            }
            let sent = batch.len();
            batch.clear();
            match rt.block_on(req.send()) {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(status = %resp.status(), spans = sent, url = %config.traces_url, "the OTLP collector refused spans")
                }
                Err(e) => {
                    tracing::warn!(error = %e, spans = sent, url = %config.traces_url, "exporting spans failed; they are dropped")
                }
            }
        }
        let dropped = DROPPED.load(Ordering::Relaxed);
        if dropped > warned_at {
            tracing::warn!(dropped, "spans dropped: the OTLP export queue was full");
            warned_at = dropped;
        }
        if let Some(reply) = flush_reply {
            let _ = reply.send(());
        }
    }
}
