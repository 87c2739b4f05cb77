//! Looking inside a running node: the debug-endpoint gate ([`require_debug`]) every `/debug/*`
//! route calls first, and CPU profiles of the whole process (`/debug/pprof/profile`) in the
//! pprof protobuf format or as an SVG flame graph.
//!
//! Profiles come from pprof-rs (SIGPROF sampling, the same approach as Go's pprof): nothing
//! samples, no signal handler is installed and no timer runs until a profile is asked for, and
//! all of it is undone when the profile ends (or its request goes away). Only one profile runs
//! at a time in a process, since the timer and the signal are process-wide. This module must
//! not grow sampling machinery of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::AppState;

/// The profile route's path (the request time limit makes room for its duration).
pub(crate) const PROFILE_PATH: &str = "/debug/pprof/profile";

/// Longest profile one request may take: long enough to catch a slow periodic stall, short
/// enough that a forgotten request does not keep the sampler on for long.
pub(crate) const MAX_PROFILE: Duration = Duration::from_secs(60);

/// Profile length when the request names none. Go's pprof takes 30 s; 10 s is enough under
/// load and answers sooner.
const DEFAULT_SECONDS: u64 = 10;

/// Samples per second of CPU time when the request names no `hz`. 99 rather than 100 so
/// sampling does not run in lockstep with work on a 10 ms period (Go's default rate is 100).
const FREQUENCY: u32 = 99;

/// The highest `hz` a request may ask for: each sample unwinds a stack in a signal handler,
/// and past this the profile measures mostly itself.
const MAX_HZ: u32 = 1000;

/// Shared libraries whose frames pprof-rs drops instead of unwinding through: unwinding from a
/// signal handler that interrupted the unwinder's or the loader's own locks (inside libc,
/// libgcc, libpthread) can deadlock; the vDSO's unwind tables are wrong on some systems. Time
/// spent in them is lost from the profile; time in mend (and the statically linked SQLite) is
/// not. (An empty list with the framehop unwinder kept system-call samples, but a profile
/// under load then hung once in CI: the handler interrupting libc is not safe.)
const BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

/// Whether a profile is being taken in this process.
static PROFILING: AtomicBool = AtomicBool::new(false);

/// Refuses a debug route unless this server has its debug endpoints on (`mend serve` turns
/// them on for a loopback address or with `--debug-endpoints`). The answer is the very 404 an
/// unknown path gets, so a caller cannot even learn that the routes exist; the operator finds
/// the flag in `mend serve --help` and the README, not in the answer.
pub(crate) fn require_debug(state: &AppState, path: &str) -> Result<(), ApiError> {
    if state.debug_endpoints {
        Ok(())
    } else {
        Err(super::health::no_route(path))
    }
}

/// The query of `/debug/pprof/profile`, as given (checked in [`ProfileRequest::parse`] so a
/// bad value gets an answer naming its field).
#[derive(Deserialize)]
pub(crate) struct ProfileQuery {
    seconds: Option<String>,
    format: Option<String>,
    hz: Option<String>,
}

/// What a profile is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// The pprof protobuf (`profile.proto`), uncompressed; `go tool pprof` and speedscope
    /// read it.
    Pprof,
    /// An SVG flame graph.
    Flamegraph,
}

/// A checked profile request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProfileRequest {
    duration: Duration,
    format: Format,
    hz: u32,
}

impl ProfileRequest {
    fn parse(q: ProfileQuery) -> Result<ProfileRequest, ApiError> {
        let max = MAX_PROFILE.as_secs();
        let seconds = match q.seconds.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_SECONDS,
            Some(s) => match s.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid(
                        "seconds",
                        format!("seconds is how long to profile, a whole number from 1 to {max} (default {DEFAULT_SECONDS}); got {s:?}"),
                    ))
                }
            },
        };
        let format = match q.format.as_deref().map(str::trim) {
            None | Some("") | Some("pprof") | Some("proto") => Format::Pprof,
            Some("flamegraph") | Some("svg") => Format::Flamegraph,
            Some(other) => {
                return Err(ApiError::invalid(
                    "format",
                    format!("format is pprof (the default, for go tool pprof and speedscope) or flamegraph (SVG); got {other:?}"),
                ))
            }
        };
        let hz = match q.hz.as_deref().map(str::trim) {
            None | Some("") => FREQUENCY,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=MAX_HZ).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid(
                        "hz",
                        format!("hz is samples per second of CPU time, a whole number from 1 to {MAX_HZ} (default {FREQUENCY}); got {s:?}"),
                    ))
                }
            },
        };
        Ok(ProfileRequest {
            duration: Duration::from_secs(seconds),
            format,
            hz,
        })
    }
}

/// Holds [`PROFILING`] while a profile runs; releases it however the profile ends.
struct Busy;

impl Busy {
    fn take() -> Option<Busy> {
        PROFILING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Busy)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

/// A CPU profile of the whole process (every thread: the workers, the HTTP server, the
/// store), taken over the next `seconds` seconds.
///
/// The default answer is the pprof protobuf, uncompressed (`go tool pprof` and speedscope read
/// it; pprof also reads it gzipped). `format=flamegraph` answers an SVG flame graph instead.
/// One profile at a time: a second request while one runs answers 409. Closing the request
/// stops the profile.
#[utoipa::path(get, path = "/debug/pprof/profile", tag = "debug",
    params(
        ("seconds" = Option<u64>, Query, minimum = 1, maximum = 60, description = "How long to profile, 1 to 60 seconds (default 10)"),
        ("format" = Option<String>, Query, pattern = "^(?:pprof|flamegraph)$", description = "`pprof` (default: the protobuf profile.proto) or `flamegraph` (SVG)"),
        ("hz" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Samples per second of CPU time, 1 to 1000 (default 99); fewer cost less under load and see less"),
    ),
    responses(
        (status = 200, description = "The profile: the pprof protobuf (`application/octet-stream`) or, with `format=flamegraph`, an SVG (`image/svg+xml`)",
            content((Vec<u8> = "application/octet-stream"), (String = "image/svg+xml"))),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "The debug endpoints are off on this server (the same answer as an unknown path)"),
        (status = 409, body = crate::error::Problem, content_type = "application/problem+json", description = "Another profile is being taken"),
        (status = 422, body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn profile(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    query: Result<Query<ProfileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_debug(&state, uri.path())?;
    let Query(query) = query?;
    let req = ProfileRequest::parse(query)?;
    let busy = Busy::take().ok_or_else(|| {
        ApiError::conflict(
            "another CPU profile is being taken in this process; wait for it to finish and ask again",
        )
    })?;
    // The profile runs on a blocking thread: waiting is a timed receive, and reading the
    // samples back (symbolising them) is CPU work that must not hold up a runtime worker.
    // Dropping `stop` (this request went away) ends the profile early.
    let (stop, stopped) = mpsc::channel::<()>();
    let run = tokio::task::spawn_blocking(move || {
        let _busy = busy;
        take_profile(req, &stopped)
    });
    let out = run.await.map_err(|e| {
        tracing::error!(error = %e, "the profiling thread failed");
        internal("the profiling thread failed")
    })?;
    drop(stop);
    let (body, content_type) = out?;
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let file = match req.format {
        Format::Pprof => "attachment; filename=\"mend-cpu.pb\"",
        Format::Flamegraph => "inline; filename=\"mend-cpu.svg\"",
    };
    resp.headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(file));
    Ok(resp)
}

/// Samples for `req.duration` (or until `stop` is dropped), then writes the profile; the body
/// and its media type.
fn take_profile(
    req: ProfileRequest,
    stop: &mpsc::Receiver<()>,
) -> Result<(Vec<u8>, &'static str), ApiError> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(i32::try_from(req.hz).unwrap_or(99))
        .blocklist(&BLOCKLIST)
        .build()
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start the CPU profiler");
            internal(&format!("cannot start the CPU profiler: {e}"))
        })?;
    if let Err(mpsc::RecvTimeoutError::Disconnected) = stop.recv_timeout(req.duration) {
        // Nobody is waiting for this profile any more; dropping the guard stops sampling.
        return Err(internal(
            "the request went away before the profile was done",
        ));
    }
    let report = guard.report().build().map_err(|e| {
        tracing::error!(error = %e, "cannot read the CPU profile back");
        internal(&format!("cannot read the CPU profile back: {e}"))
    })?;
    // Sampling stops here, before the report is encoded.
    drop(guard);
    match req.format {
        Format::Pprof => {
            use pprof::protos::Message;
            let profile = report.pprof().map_err(|e| {
                tracing::error!(error = %e, "cannot encode the CPU profile");
                internal(&format!("cannot encode the CPU profile: {e}"))
            })?;
            Ok((profile.encode_to_vec(), "application/octet-stream"))
        }
        Format::Flamegraph => {
            let mut svg = Vec::new();
            report.flamegraph(&mut svg).map_err(|e| {
                tracing::error!(error = %e, "cannot draw the flame graph");
                internal(&format!("cannot draw the flame graph: {e}"))
            })?;
            if svg.is_empty() {
                // pprof-rs writes nothing when no sample was taken (an idle process); an SVG
                // that says so is still an SVG.
                svg = empty_flamegraph();
            }
            Ok((svg, "image/svg+xml"))
        }
    }
}

/// A flame graph for a profile without samples.
fn empty_flamegraph() -> Vec<u8> {
    br#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="600" height="60" xmlns="http://www.w3.org/2000/svg"><text x="10" y="35" font-family="Verdana" font-size="14">No CPU samples: the process was idle while it was profiled.</text></svg>
"#
    .to_vec()
}

fn internal(detail: &str) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(seconds: Option<&str>, format: Option<&str>) -> Result<ProfileRequest, ApiError> {
        ProfileRequest::parse(ProfileQuery {
            seconds: seconds.map(str::to_owned),
            format: format.map(str::to_owned),
            hz: None,
        })
    }

    #[test]
    fn hz_defaults_to_the_frequency_and_stays_within_bounds() {
        let hz = |v: &str| {
            ProfileRequest::parse(ProfileQuery {
                seconds: None,
                format: None,
                hz: Some(v.to_owned()),
            })
        };
        assert_eq!(parse(None, None).unwrap().hz, FREQUENCY);
        assert_eq!(hz("").unwrap().hz, FREQUENCY);
        assert_eq!(hz("19").unwrap().hz, 19);
        assert_eq!(hz("1000").unwrap().hz, 1000);
        for bad in ["0", "1001", "-5", "4.5", "fast"] {
            let e = hz(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("hz"), "{bad}");
            assert!(e.detail.contains("1 to 1000"), "{}", e.detail);
        }
    }

    #[test]
    fn seconds_default_to_ten_and_stay_within_a_minute() {
        let r = parse(None, None).unwrap();
        assert_eq!(r.duration, Duration::from_secs(10));
        assert_eq!(r.format, Format::Pprof);
        assert_eq!(
            parse(Some("60"), None).unwrap().duration,
            Duration::from_secs(60)
        );
        assert_eq!(
            parse(Some("1"), Some("flamegraph")).unwrap().format,
            Format::Flamegraph
        );
        for bad in ["0", "61", "-1", "2.5", "ten", "99999999999999999999999"] {
            let e = parse(Some(bad), None).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(e.field.as_deref(), Some("seconds"), "{bad}");
            assert!(e.detail.contains("1 to 60"), "{}", e.detail);
        }
        let e = parse(None, Some("png")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("format"));
    }

    #[test]
    fn only_one_profile_at_a_time() {
        let first = Busy::take().unwrap();
        assert!(Busy::take().is_none());
        drop(first);
        assert!(Busy::take().is_some());
    }
}
