//! The answers every route shares, added to the OpenAPI document in one place: the bearer
//! scheme, and the statuses the middleware and the extractors give whatever the handler does
//! (401/403 from auth, 400/413/415/422 from parsing, 500 from a caught panic, 503 from the
//! time limit or the store). Handlers declare only their own statuses; this keeps the
//! document exact without repeating the same lines on forty routes.

use serde_json::{json, Value};
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::schema::{
    AnyOfBuilder, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::KnownFormat;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};

use crate::error::PROBLEM_JSON;

/// The name of the bearer scheme in `components.securitySchemes`.
pub(crate) const BEARER: &str = "bearer";

/// Shared error answers: (status, component name, description).
const SHARED: &[(&str, &str, &str)] = &[
    ("400", "BadRequest", "Malformed request: JSON that does not parse, or a path or query parameter of the wrong type"),
    ("401", "Unauthorized", "No bearer token, or not a valid one (`WWW-Authenticate: Bearer`)"),
    ("403", "Forbidden", "The token's role does not allow this route, or (without a token configured) the request does not come from this machine"),
    ("404", "NotFound", "No job with this id"),
    ("413", "PayloadTooLarge", "The body is larger than the server's limit (`--max-body-bytes`, 1 MiB by default)"),
    ("415", "UnsupportedMediaType", "The body is not sent as `Content-Type: application/json`"),
    ("422", "UnprocessableEntity", "The body or a parameter is well formed but breaks a rule; `field` names it"),
    ("500", "InternalError", "A bug in the server; the failed part changed nothing. Report it with the request id"),
    ("503", "Unavailable", "The store is unavailable or busy, or the request ran past the server's time limit; retry shortly"),
];

/// Adds the bearer scheme and the shared answers (see the module doc).
pub(crate) struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (schema, rules) in cross_field_rules() {
            add_rules(components, schema, rules);
        }
        for (_, name, description) in SHARED {
            components
                .responses
                .insert((*name).to_owned(), RefOr::T(problem(description)));
        }
        for schema in components.schemas.values_mut() {
            if let RefOr::T(s) = schema {
                bound_integers(s);
            }
        }
        add_put_bodies(openapi);
        if let Some(RefOr::T(Schema::Object(o))) = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("Limit"))
        {
            // As an answer a limit comes with its state (`LimitState` flattens it); as a
            // request body it is `LimitSpec`, which keeps refusing unknown fields.
            o.additional_properties = None;
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                for p in op.parameters.iter_mut().flatten() {
                    if let Some(RefOr::T(s)) = p.schema.as_mut() {
                        bound_integers(s);
                    }
                    exact_query(p);
                }
                add_shared(op, path.contains("{id}"));
            }
        }
    }
}

/// Rules that tie fields together (or constrain list items) which the field annotations
/// cannot say, added to a component schema as `allOf`. Each mirrors a check of the server
/// named in the comment beside it.
fn cross_field_rules() -> Vec<(&'static str, Value)> {
    // "Present and not null", as a schema.
    let given =
        |field: &str, ty: &str| json!({"required": [field], "properties": {field: {"type": ty}}});
    let both = |a: Value, b: Value| json!({"allOf": [a, b]});
    let states = [
        "scheduled",
        "available",
        "running",
        "retryable",
        "completed",
        "cancelled",
        "discarded",
    ];
    let outcome_is =
        |o: &str| json!({"required": ["outcome"], "properties": {"outcome": {"const": o}}});
    vec![
        (
            // jobs::to_new_job: run_at or delay_ms, not both; unique or an idempotency key, not
            // both; `unique_key` is the old name of `idempotency_key`.
            "EnqueueRequest",
            json!([
                {"not": both(given("run_at", "string"), given("delay_ms", "integer"))},
                {"not": both(given("unique", "object"), given("idempotency_key", "string"))},
                {"not": both(given("unique", "object"), given("unique_key", "string"))},
                {"not": {"required": ["idempotency_key", "unique_key"]}},
            ]),
        ),
        (
            // jobs::unique_opts and mend::UniqueOpts::validate: states are job states and
            // include the four a waiting or running job is in; by_args lists 1–32 top-level
            // keys or JSON pointers; a period is whole numbers with units.
            "UniqueRequest",
            json!([{"properties": {
                "states": {"anyOf": [{"type": "null"}, {
                    "type": "array",
                    "items": {"type": "string", "enum": states},
                    "allOf": states[..4].iter().map(|s| json!({"contains": {"const": s}})).collect::<Vec<_>>(),
                }]},
                "by_args": {"anyOf": [{"type": "null"}, {"type": "boolean"}, {
                    "type": "array", "minItems": 1, "maxItems": 32,
                    "items": {"type": "string", "pattern": r"^(?:[^/][\s\S]*|/(?:[^~]|~[01])*)$"},
                }]},
                // The one-unit forms up to 366 days; the server also takes sums (`1h30m`) up
                // to 366 days in all, which no pattern can bound.
                "period": {"anyOf": [{"type": "null"}, {
                    "type": "string",
                    "pattern": r"^(?:[1-9][0-9]{0,9}ms|[1-9][0-9]{0,6}s|[1-9][0-9]{0,4}m|[1-9][0-9]{0,2}h|(?:[1-9]|[1-9][0-9]|[12][0-9][0-9]|3[0-5][0-9]|36[0-6])d)$",
                }]},
            }}]),
        ),
        (
            // mend::cron::PeriodicDecl::into_periodic and Periodic::validate; `name`, `schedule`
            // and `kind` are required to create one. A schedule is a cron expression (format
            // `cron`) and a time zone an IANA name (format `iana-time-zone`): no pattern says
            // either exactly, so the formats name them (the contract test generates them).
            "PeriodicDecl",
            json!([given_strings(&["name", "schedule", "kind"]), decl_fields()]),
        ),
        (
            // mend::limits::Limit::validate.
            "Limit",
            json!([
                {"properties": {"name": {"pattern": LIMIT_NAME}}},
                limit_fields(),
            ]),
        ),
        (
            // mend::limits::Limit::validate, on its rate.
            "Rate",
            json!([{"properties": {
                "max": {"minimum": 1},
                "per_ms": {"minimum": 1, "maximum": 366_u64 * 24 * 3_600_000},
                "burst": {"minimum": 1},
            }}]),
        ),
        (
            // workers::finish: a failed outcome says what went wrong; a snoozed one how long.
            "FinishItem",
            json!([
                {"if": outcome_is("failed"), "then": {"required": ["error"], "properties": {"error": {"type": "string"}}}},
                {"if": outcome_is("snoozed"), "then": {"required": ["delay_ms"], "properties": {"delay_ms": {"type": "integer"}}}},
            ]),
        ),
    ]
}

/// These fields must be given, as strings (not `null`).
fn given_strings(fields: &[&str]) -> Value {
    let props: serde_json::Map<String, Value> = fields
        .iter()
        .map(|f| ((*f).to_owned(), json!({"type": "string"})))
        .collect();
    json!({"required": fields, "properties": props})
}

/// Not blank, at most 255 characters, no NUL (kinds and queues of schedules and limits).
fn nonblank() -> Value {
    json!({"maxLength": 255, "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$"})
}

/// The pattern of a limit's name.
const LIMIT_NAME: &str = r"^[A-Za-z0-9_.-]{1,100}$";

fn decl_fields() -> Value {
    json!({"properties": {
        "name": {"pattern": r"^[A-Za-z0-9_./-]{1,128}$"},
        "schedule": {"format": "cron"},
        "timezone": {"format": "iana-time-zone"},
        "kind": nonblank(),
        "queue": nonblank(),
        "priority": {"minimum": i16::MIN, "maximum": i16::MAX},
        "max_attempts": {"minimum": 1},
        "tags": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "string", "pattern": r"^[^\u0000]*$"}}]},
        "catch_up": {"enum": ["none", "latest", "all", null]},
        "catch_up_max": {"minimum": 1, "maximum": 1000},
    }})
}

fn limit_fields() -> Value {
    json!({
        "properties": {
            "queue": nonblank(),
            "kind": nonblank(),
            "key": {"pattern": r"^(?:/(?:[^~]|~[01])*)?$"},
            "concurrency": {"minimum": 1},
        },
        // A limit limits something.
        "anyOf": [
            {"required": ["rate"], "properties": {"rate": {"type": "object"}}},
            {"required": ["concurrency"], "properties": {"concurrency": {"type": "integer"}}},
        ],
    })
}

/// `PUT /v1/cron/{name}` and `PUT /v1/limits/{name}` take the name from the path: their
/// bodies are the create schemas without `name` (the server refuses a body whose name differs
/// from the path's).
fn add_put_bodies(openapi: &mut OpenApi) {
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    for (from, to, rules) in [
        (
            "PeriodicDecl",
            "CronSpec",
            json!([given_strings(&["schedule", "kind"]), decl_fields()]),
        ),
        ("Limit", "LimitSpec", json!([limit_fields()])),
    ] {
        let Some(RefOr::T(Schema::Object(o))) = components.schemas.get(from) else {
            continue;
        };
        let mut o = o.clone();
        o.properties.remove("name");
        o.required.retain(|r| r != "name");
        o.description = Some(format!("{from} without `name`: the path names it"));
        o.extensions
            .get_or_insert_with(Default::default)
            .insert("allOf".to_owned(), rules);
        components
            .schemas
            .insert(to.to_owned(), RefOr::T(Schema::Object(o)));
    }
    for (path, schema) in [
        ("/v1/cron/{name}", "CronSpec"),
        ("/v1/limits/{name}", "LimitSpec"),
    ] {
        let body = openapi
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.put.as_mut())
            .and_then(|op| op.request_body.as_mut());
        if let Some(content) = body.and_then(|b| b.content.get_mut("application/json")) {
            content.schema = Some(Ref::from_schema_name(schema).into());
        }
    }
}

/// Gives every integer the range of its Rust type (utoipa writes only the format, and a
/// number out of range is refused by the server's parser).
fn bound_integers(schema: &mut Schema) {
    match schema {
        Schema::Object(o) => {
            let is_int = match &o.schema_type {
                SchemaType::Type(t) => *t == Type::Integer,
                SchemaType::Array(ts) => ts.contains(&Type::Integer),
                SchemaType::AnyValue => false,
            };
            if is_int {
                let unsigned = o.minimum.as_ref().is_some_and(|m| {
                    matches!(m, utoipa::Number::Int(0) | utoipa::Number::UInt(0))
                        || *m == utoipa::Number::Float(0.0)
                });
                let range: Option<(utoipa::Number, utoipa::Number)> = match &o.format {
                    Some(SchemaFormat::KnownFormat(KnownFormat::Int32)) if unsigned => {
                        Some((0.into(), u32::MAX.into()))
                    }
                    Some(SchemaFormat::KnownFormat(KnownFormat::Int32)) => {
                        Some((i32::MIN.into(), i32::MAX.into()))
                    }
                    Some(SchemaFormat::KnownFormat(KnownFormat::Int64)) if unsigned => {
                        Some((0.into(), u64::MAX.into()))
                    }
                    Some(SchemaFormat::KnownFormat(KnownFormat::Int64)) => {
                        Some((i64::MIN.into(), i64::MAX.into()))
                    }
                    _ if unsigned => Some((0.into(), u64::MAX.into())),
                    _ => None,
                };
                if let Some((lo, hi)) = range {
                    o.minimum.get_or_insert(lo);
                    o.maximum.get_or_insert(hi);
                }
            }
            for p in o.properties.values_mut() {
                if let RefOr::T(s) = p {
                    bound_integers(s);
                }
            }
        }
        Schema::Array(a) => {
            if let utoipa::openapi::schema::ArrayItems::RefOrSchema(item) = &mut a.items {
                if let RefOr::T(s) = item.as_mut() {
                    bound_integers(s);
                }
            }
        }
        Schema::OneOf(one) => {
            for s in &mut one.items {
                if let RefOr::T(s) = s {
                    bound_integers(s);
                }
            }
        }
        _ => {}
    }
}

fn add_rules(components: &mut utoipa::openapi::Components, schema: &str, rules: Value) {
    if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(schema) {
        o.extensions
            .get_or_insert_with(Default::default)
            .insert("allOf".to_owned(), rules);
    }
}

/// A kind or queue name, as `jobs::valid_name` checks it.
pub(crate) struct Name;

impl utoipa::PartialSchema for Name {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(NAME))
            .description(Some(
                "A kind or queue name: 1–128 letters, digits and _ - . : /",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Name {}

/// The pattern of a kind or queue name.
pub(crate) const NAME: &str = r"^[A-Za-z0-9_.:/-]{1,128}$";

/// A job's tag: 1–128 characters without NUL.
pub(crate) struct Tag;

impl utoipa::PartialSchema for Tag {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[^\u0000]{1,128}$"))
            .description(Some("A tag: 1–128 characters, no NUL"))
            .into()
    }
}

impl utoipa::ToSchema for Tag {}

/// One `kind` value of `GET /v1/events`: names, comma-separated.
pub(crate) struct EventKinds;

impl utoipa::PartialSchema for EventKinds {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^,*(?:[A-Za-z0-9_.:/-]{1,128},*)*$"))
            .description(Some(
                "Event kinds, comma-separated (`rescue`, `node_joined`, `node_left`)",
            ))
            .into()
    }
}

impl utoipa::ToSchema for EventKinds {}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

/// Whether the operation opts out of the document-wide bearer requirement (`security(())`,
/// the health probes).
fn is_open(op: &Operation) -> bool {
    op.security
        .as_ref()
        .is_some_and(|reqs| reqs.iter().all(|r| *r == Default::default()))
}

/// Query parameters the schema types cannot say: times where an empty value means "no bound",
/// and `args`, a JSON object written in the query.
fn exact_query(p: &mut Parameter) {
    if p.parameter_in != ParameterIn::Query {
        return;
    }
    let is_time = matches!(
        p.schema.as_ref(),
        Some(RefOr::T(Schema::Object(o)))
            if o.format == Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))
    );
    if is_time {
        let empty = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(0));
        let time = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
        p.schema = Some(
            AnyOfBuilder::new()
                .item(time)
                .item(empty)
                .description(Some("An RFC 3339 time; empty means no bound"))
                .into(),
        );
    }
    if p.name == "args" {
        // `content` instead of `schema`: the value is the JSON text of an object.
        p.schema = None;
        p.extensions.get_or_insert_with(Default::default).insert(
            "content".to_owned(),
            json!({"application/json": {"schema": {"type": "object"}}}),
        );
    }
}

fn add_shared(op: &mut Operation, has_job_id: bool) {
    if is_open(op) {
        // The probes need no token, but a server without one answers 403 to a request that
        // does not come from this machine (middleware::auth), probes included.
        op.responses
            .responses
            .entry("403".to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name("Forbidden")));
        return;
    }
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_path_or_query = params
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query));
    let has_body = op.request_body.is_some();
    let mut wanted = vec!["401", "403", "500", "503"];
    if has_path_or_query || has_body {
        wanted.extend(["400", "422"]);
    }
    if has_body {
        wanted.extend(["413", "415"]);
    }
    if has_job_id {
        wanted.push("404");
    }
    for (status, name, _) in SHARED {
        if wanted.contains(status) {
            op.responses
                .responses
                .entry((*status).to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
        }
    }
}
