//! OpenTelemetry export with the standard crates: `tracing-opentelemetry` turns mend's
//! `tracing` spans into OpenTelemetry spans, the SDK samples them (`OTEL_TRACES_SAMPLER`) and
//! batches them, and `opentelemetry-otlp` ships them over OTLP/HTTP (protobuf, or JSON with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) to `$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces`.
//!
//! What mend adds: a span that continues a stored or received trace context (the `request`
//! span from a `traceparent` header, each attempt's `job` span from the context stored with
//! the job) gets that context as its remote parent — and the `job` span a link to it — through
//! [`continue_trace`], so one trace shows caller → request → enqueue → attempts; and the
//! sampler settings are checked at start-up, so a typo is an error rather than a silent default.
//!
//! Export runs on the SDK's own thread with a bounded queue: a slow or absent collector costs
//! dropped spans, never a slower job.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use mend::trace::TraceParent;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Finished spans waiting for export before new ones are dropped (unless `OTEL_BSP_MAX_QUEUE_SIZE`
/// says otherwise): a burst of short jobs makes spans faster than one export a second ships.
const QUEUE: usize = 65_536;
/// Longest a finished span waits for its batch (unless `OTEL_BSP_SCHEDULE_DELAY`): short, so a
/// trace shows up while the person who started it is still looking.
const EVERY: Duration = Duration::from_millis(200);

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Which traces are kept (`OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// `always_on`: every trace.
    AlwaysOn,
    /// `always_off`: none.
    AlwaysOff,
    /// `traceidratio`: this share of traces, decided from the trace id (so every service that
    /// uses the same ratio keeps the same traces).
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the default): as the caller decided; every trace mend starts.
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`: as the caller decided; none that mend starts.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: as the caller decided; this share of those mend starts.
    ParentBasedTraceIdRatio(f64),
}

impl Sampling {
    /// Reads the two variables' values; `None` means unset.
    pub fn parse(sampler: Option<&str>, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(a) => match a.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!(
                        "OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio: give a number from 0 (keep no trace) to 1 (keep every trace), e.g. 0.1"
                    )),
                },
            }
        };
        let name = sampler.map(str::trim).filter(|s| !s.is_empty());
        Ok(match name.unwrap_or("parentbased_always_on") {
            "always_on" => Sampling::AlwaysOn,
            "always_off" => Sampling::AlwaysOff,
            "traceidratio" => Sampling::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Sampling::ParentBasedAlwaysOn,
            "parentbased_always_off" => Sampling::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Sampling::ParentBasedTraceIdRatio(ratio()?),
            other => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER={other:?} is not a sampler mend knows: use always_on, always_off, traceidratio, parentbased_always_on (the default), parentbased_always_off or parentbased_traceidratio (with OTEL_TRACES_SAMPLER_ARG=RATIO)"
                ))
            }
        })
    }

    /// The SDK's sampler.
    pub fn sampler(self) -> Sampler {
        match self {
            Sampling::AlwaysOn => Sampler::AlwaysOn,
            Sampling::AlwaysOff => Sampler::AlwaysOff,
            Sampling::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            Sampling::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Sampling::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Sampling::ParentBasedTraceIdRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The traces URL (`…/v1/traces`).
    pub traces_url: String,
    /// `service.name` of the resource.
    pub service_name: String,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// Which traces are kept.
    pub sampling: Sampling,
    /// OTLP/HTTP with JSON bodies instead of protobuf.
    pub json: bool,
}

impl OtlpConfig {
    /// From the standard environment variables; `Ok(None)` when no endpoint is set. A bad
    /// sampler or protocol is an error even then: it would bite the day an endpoint is set.
    pub fn from_env() -> Result<Option<Self>, String> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`OtlpConfig::from_env`], reading variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let sampling = Sampling::parse(
            var("OTEL_TRACES_SAMPLER").as_deref(),
            var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        let json = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
            .map(str::trim)
        {
            None | Some("http/protobuf") => false,
            Some("http/json") => true,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use http/protobuf (the default) or http/json (gRPC is not built in)"
                ))
            }
        };
        let traces_url = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => url,
            None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => format!("{}/v1/traces", base.trim_end_matches('/')),
                None => return Ok(None),
            },
        };
        let headers = var("OTEL_EXPORTER_OTLP_HEADERS")
            .map(|h| {
                h.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(OtlpConfig {
            traces_url,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "mend".into()),
            headers,
            sampling,
            json,
        }))
    }
}

/// The layer exporting spans; add it to the subscriber. Starts the export thread.
pub type OtlpLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// Builds the exporter and the SDK pipeline for `config`, and the layer feeding it.
pub fn layer<S>(config: OtlpConfig) -> Result<OtlpLayer<S>, String>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(if config.json {
            Protocol::HttpJson
        } else {
            Protocol::HttpBinary
        })
        .with_endpoint(config.traces_url.clone())
        .with_headers(config.headers.iter().cloned().collect::<HashMap<_, _>>())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| {
            format!(
                "cannot build the OTLP exporter for {}: {e}",
                config.traces_url
            )
        })?;
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        batch = batch.with_max_queue_size(QUEUE);
    }
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        batch = batch.with_scheduled_delay(EVERY);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(config.sampling.sampler())
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name)
                .build(),
        )
        .build();
    let layer = layer_for(&provider);
    let _ = PROVIDER.set(provider);
    mend::trace::set_continue_hook(continue_trace);
    Ok(layer)
}

/// The `tracing` layer over `provider`'s tracer.
fn layer_for<S>(provider: &SdkTracerProvider) -> OtlpLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mend"))
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        // The exporter's own HTTP client must not feed spans back into the exporter.
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            !["hyper", "reqwest", "h2", "rustls", "opentelemetry"]
                .iter()
                .any(|t| m.target().starts_with(t))
        }))
        .boxed()
}

/// Sends what is queued now and waits for it (at most `limit`): call before exiting.
pub fn flush(limit: Duration) {
    let Some(provider) = PROVIDER.get() else {
        return;
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // force_flush blocks until the collector answers (or its own timeout): bound it here.
    let spawned = std::thread::Builder::new()
        .name("mend-otlp-flush".into())
        .spawn(move || {
            let _ = done_tx.send(provider.force_flush());
        });
    if spawned.is_ok() {
        if let Ok(Err(e)) = done_rx.recv_timeout(limit) {
            tracing::warn!(error = %e, "flushing spans to the OTLP collector failed");
        }
    }
}

/// The `traceparent` of the current span, when the layer is installed.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Makes `span` (created, not yet entered) continue the trace of `traceparent`: its remote
/// parent, and with `link` also a link to it (an attempt links to its enqueue, as a retry
/// may run long after). An invalid header is ignored, as W3C asks.
pub fn continue_trace(span: &tracing::Span, traceparent: &str, link: bool) {
    let Some(tp) = TraceParent::parse(traceparent) else {
        return;
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(tp.trace_id),
        SpanId::from_bytes(tp.span_id),
        TraceFlags::new(tp.flags),
        true,
        TraceState::default(),
    );
    if link {
        span.add_link(remote.clone());
    }
    // Only fails when the layer is not installed or the span already started: then there is
    // nothing to continue.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Debug, Clone, Default)]
    struct Kept(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// Runs `f` with spans sampled by `sampling` and returns what would have been exported.
    fn exported(sampling: Sampling, f: impl FnOnce()) -> Vec<SpanData> {
        let kept = Kept::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(kept.clone())
            .with_sampler(sampling.sampler())
            .build();
        let subscriber = tracing_subscriber::registry().with(layer_for(&provider));
        tracing::subscriber::with_default(subscriber, f);
        let _ = provider.force_flush();
        let spans = kept.0.lock().unwrap().clone();
        spans
    }

    /// `n` traces with fixed, spread-out trace ids (a seeded generator): one root span each,
    /// continuing a caller's context whose sampled flag is `flags`.
    fn traces(n: usize, flags: u8) {
        let mut rng = fastrand::Rng::with_seed(18);
        for _ in 0..n {
            let trace = format!("{:032x}", rng.u128(1..));
            let span = tracing::info_span!("request");
            continue_trace(
                &span,
                &format!("00-{trace}-00f067aa0ba902b7-{flags:02x}"),
                false,
            );
            span.in_scope(|| tracing::info_span!("enqueue").in_scope(|| {}));
        }
    }

    /// Root spans started by mend (no caller context).
    fn roots(n: usize) {
        for _ in 0..n {
            tracing::info_span!("request").in_scope(|| {});
        }
    }

    #[test]
    fn sampler_settings_are_read_and_bad_ones_refused() {
        assert_eq!(
            Sampling::parse(None, None),
            Ok(Sampling::ParentBasedAlwaysOn)
        );
        assert_eq!(
            Sampling::parse(Some("traceidratio"), Some("0.25")),
            Ok(Sampling::TraceIdRatio(0.25))
        );
        assert_eq!(
            Sampling::parse(Some("parentbased_traceidratio"), None),
            Ok(Sampling::ParentBasedTraceIdRatio(1.0))
        );
        assert_eq!(
            Sampling::parse(Some("always_off"), Some("ignored")),
            Ok(Sampling::AlwaysOff)
        );
        let e = Sampling::parse(Some("sometimes"), None).unwrap_err();
        assert!(e.contains("OTEL_TRACES_SAMPLER=\"sometimes\""), "{e}");
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            let e = Sampling::parse(Some("traceidratio"), Some(bad)).unwrap_err();
            assert!(e.contains("OTEL_TRACES_SAMPLER_ARG"), "{e}");
        }
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        // A bad sampler is an error even without an endpoint.
        assert!(OtlpConfig::from_vars(vars(&[("OTEL_TRACES_SAMPLER", "x")])).is_err());
        assert!(OtlpConfig::from_vars(vars(&[])).unwrap().is_none());
        let c = OtlpConfig::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_url, "http://c:4318/v1/traces");
        assert_eq!(c.sampling, Sampling::ParentBasedTraceIdRatio(0.1));
        assert!(c.json);
        let e = OtlpConfig::from_vars(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .unwrap_err();
        assert!(e.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
    }

    #[test]
    fn a_ratio_keeps_that_share_of_traces() {
        let n = 2000;
        let count = |r: f64| {
            exported(Sampling::TraceIdRatio(r), || traces(n, 1))
                .iter()
                .filter(|s| s.name == "request")
                .count()
        };
        assert_eq!(count(0.0), 0, "a ratio of 0 exports nothing");
        assert_eq!(count(1.0), n, "a ratio of 1 exports everything");
        let half = count(0.5);
        assert!(
            (n * 45 / 100..=n * 55 / 100).contains(&half),
            "a ratio of 0.5 keeps about half: {half} of {n}"
        );
        // The decision is per trace: a kept trace keeps its children.
        let spans = exported(Sampling::TraceIdRatio(0.5), || traces(n, 1));
        let requests = spans.iter().filter(|s| s.name == "request").count();
        let enqueues = spans.iter().filter(|s| s.name == "enqueue").count();
        assert_eq!(requests, enqueues);
        assert_eq!(exported(Sampling::AlwaysOff, || roots(10)).len(), 0);
        assert_eq!(exported(Sampling::AlwaysOn, || roots(10)).len(), 10);
    }

    #[test]
    fn a_parent_based_sampler_follows_the_callers_flag() {
        // Sampled callers are kept even when mend would keep none of its own traces.
        let spans = exported(Sampling::ParentBasedAlwaysOff, || traces(20, 1));
        assert_eq!(spans.len(), 40);
        let spans = exported(Sampling::ParentBasedTraceIdRatio(0.0), || traces(20, 1));
        assert_eq!(spans.len(), 40);
        // A caller that did not sample: nothing, even with always-on for mend's own traces.
        assert_eq!(
            exported(Sampling::ParentBasedAlwaysOn, || traces(20, 0)).len(),
            0
        );
        // mend's own traces follow the root sampler.
        assert_eq!(
            exported(Sampling::ParentBasedAlwaysOn, || roots(7)).len(),
            7
        );
        assert_eq!(
            exported(Sampling::ParentBasedAlwaysOff, || roots(7)).len(),
            0
        );
        // A plain ratio ignores the caller's flag.
        assert_eq!(
            exported(Sampling::TraceIdRatio(1.0), || traces(5, 0)).len(),
            10
        );
    }

    #[test]
    fn a_continued_span_has_the_remote_parent_and_the_link() {
        let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        let mut seen = None;
        let spans = exported(Sampling::ParentBasedAlwaysOn, || {
            let span = tracing::info_span!("job", id = "j1", attempt = 2);
            continue_trace(&span, &format!("00-{trace}-{caller}-01"), true);
            seen = span.in_scope(current_traceparent);
        });
        let job = spans.iter().find(|s| s.name == "job").expect("job span");
        assert_eq!(job.span_context.trace_id().to_string(), trace);
        assert_eq!(job.parent_span_id.to_string(), caller);
        let links: Vec<String> = job
            .links
            .iter()
            .map(|l| format!("{}-{}", l.span_context.trace_id(), l.span_context.span_id()))
            .collect();
        assert_eq!(links, vec![format!("{trace}-{caller}")]);
        assert_eq!(
            seen,
            Some(format!("00-{trace}-{}-01", job.span_context.span_id()))
        );
        assert!(job
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "id" && kv.value.as_str() == "j1"));
    }
}
