//! The OpenAPI 3.1 document (`GET /v1/openapi.json`), generated from the code: every
//! route's query parameters from the very structs its handler parses them into, request
//! and response bodies from the types that (de)serialize them (schemars, JSON Schema
//! 2020-12, the dialect of OpenAPI 3.1), and one error shape for every failure. A test
//! checks that every route the routers serve is in it.

mod routes;

use schemars::generate::{Contract, SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

/// One operation: method, path, what it is, and how it is called and answered.
struct Op {
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    /// The query parameters' struct, as a schema.
    query: Option<Schema>,
    /// Parameters of the struct this route does not take, and those it must have.
    hide: &'static [&'static str],
    require: &'static [&'static str],
    /// Media type → schema of the request body.
    body: Vec<(&'static str, Value)>,
    /// Status → (media type → schema); `None` media: no body.
    ok: Vec<(&'static str, Option<(&'static str, Value)>)>,
}

/// Schemas of request and query types (deserialized) and of response types (serialized).
struct Schemas {
    read: SchemaGenerator,
    written: SchemaGenerator,
}

impl Schemas {
    fn new() -> Self {
        let settings = |contract| {
            let mut s = SchemaSettings::draft2020_12();
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
            s.contract = contract;
            s
        };
        Self {
            read: SchemaGenerator::new(settings(Contract::Deserialize)),
            written: SchemaGenerator::new(settings(Contract::Serialize)),
        }
    }

    fn query<T: JsonSchema>(&mut self) -> Option<Schema> {
        let mut inline = SchemaSettings::draft2020_12();
        inline.inline_subschemas = true;
        Some(SchemaGenerator::new(inline).into_root_schema_for::<T>())
    }

    fn body<T: JsonSchema>(&mut self) -> Value {
        self.read.subschema_for::<T>().to_value()
    }

    fn answer<T: JsonSchema>(&mut self) -> Value {
        self.written.subschema_for::<T>().to_value()
    }
}

/// The document, as served.
pub fn document() -> Value {
    let mut s = Schemas::new();
    let ops = routes::operations(&mut s);
    let mut paths: Map<String, Value> = Map::new();
    for op in ops {
        let entry = paths.entry(op.path).or_insert_with(|| json!({}));
        entry[op.method] = operation(&op);
    }
    let mut schemas = s.read.take_definitions(true);
    schemas.extend(s.written.take_definitions(true));
    schemas.insert("Problem".into(), problem_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tripline",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Webhooks, the single-use URLs of waiting runs, and the control API (`/v1`). With an API key set, `/v1` needs `Authorization: Bearer <key>`; without one it answers loopback only, and a state-changing request needs a JSON or YAML body or `X-Tripline-Request: 1`. Every error is `application/problem+json`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    })
}

fn operation(op: &Op) -> Value {
    let mut params: Vec<Value> = path_params(op.path);
    if let Some(q) = &op.query {
        let properties = q.get("properties").and_then(Value::as_object);
        for (name, schema) in properties.into_iter().flatten() {
            if op.hide.contains(&name.as_str()) {
                continue;
            }
            // A parameter left out is the null: the text `null` is no value.
            let mut schema = without_null(schema);
            let description = schema.as_object_mut().and_then(|o| o.remove("description"));
            let required = op.require.contains(&name.as_str());
            let mut p =
                json!({"name": name, "in": "query", "required": required, "schema": schema});
            if let Some(d) = description {
                p["description"] = d;
            }
            params.push(p);
        }
    }
    let mut responses = Map::new();
    for (status, content) in &op.ok {
        let mut r = json!({"description": "done"});
        if let Some((media, schema)) = content {
            r["content"] = json!({ *media: {"schema": schema} });
            if *media == "text/csv" {
                // An export: `format=ndjson` answers one JSON document per line.
                r["content"]["application/x-ndjson"] = json!({"schema": {"type": "string"}});
            }
        }
        responses.insert(status.to_string(), r);
    }
    responses.insert(
        "default".into(),
        json!({"description": "an error, in one shape", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}),
    );
    let mut v = json!({
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '-', '.'], "_")),
        "parameters": params,
        "responses": responses,
    });
    if op.path.starts_with("/v1") || op.path == "/metrics" {
        v["security"] = json!([{"apiKey": []}, {}]);
    }
    if !op.body.is_empty() {
        let content: Map<String, Value> = op
            .body
            .iter()
            .map(|(media, schema)| (media.to_string(), json!({"schema": schema})))
            .collect();
        v["requestBody"] = json!({"required": true, "content": content});
    }
    v
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let schema = match (name, path) {
                ("name", p) if p.starts_with("/v1/keys") => key_name(),
                ("name", _) => {
                    json!({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$"})
                }
                ("id", p) if p.starts_with("/v1/workflows") => {
                    json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"})
                }
                _ => json!({"type": "string", "minLength": 1}),
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect()
}

/// `POST /v1/jobs`'s body: its filter is the listing's parameters of the items it acts on
/// (`/v1/inbox`'s to reprocess, `/v1/runs`'s else), without the page.
fn job_body(s: &mut Schemas) -> Value {
    use super::control::schema as c;
    let filter = |q: Option<Schema>| {
        let mut v = q.map(Schema::to_value).unwrap_or_else(|| json!({}));
        if let Some(props) = v.get_mut("properties").and_then(Value::as_object_mut) {
            for k in ["limit", "cursor", "format"] {
                props.remove(k);
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("$schema");
            o.remove("title");
            // Left out or null: every item of the kind.
            o.insert("type".into(), json!(["object", "null"]));
        }
        v
    };
    json!({"allOf": [
        s.body::<c::NewJob>(),
        {
            "if": {"properties": {"action": {"const": "reprocess"}}},
            "then": {"properties": {"filter": filter(s.query::<c::InboxFilters>())}},
            "else": {"properties": {"filter": filter(s.query::<c::RunFilters>())}},
        },
    ]})
}

/// A schema without its `null` alternative.
fn without_null(schema: &Value) -> Value {
    let mut v = schema.clone();
    let Some(o) = v.as_object_mut() else {
        return v;
    };
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = o.get(key).and_then(Value::as_array) {
            let kept: Vec<Value> = alts
                .iter()
                .filter(|a| a["type"] != "null")
                .cloned()
                .collect();
            if kept.len() == 1 {
                let mut only = kept[0].clone();
                if let (Some(d), Some(m)) = (o.get("description").cloned(), only.as_object_mut()) {
                    m.insert("description".into(), d);
                }
                return only;
            }
            o.insert(key.into(), Value::Array(kept));
        }
    }
    if let Some(types) = o.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
    }
    if let Some(values) = o.get_mut("enum").and_then(Value::as_array_mut) {
        values.retain(|e| !e.is_null());
    }
    v
}

/// An API key's name (`main` and `local` are the server's own).
fn key_name() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$", "not": {"enum": ["main", "local"]}})
}

/// A context store patch: keys of 1 to 200 characters, none a control character; values
/// strings of at most 32 KiB, or null to delete.
fn context_patch() -> Value {
    json!({"type": "object",
        "propertyNames": {"minLength": 1, "maxLength": 200, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"},
        "additionalProperties": {"type": ["string", "null"], "description": "at most 32 KiB of UTF-8 (413 past it); null deletes the key"}})
}

fn problem_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "description": "urn:tripline:problem:{code}"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string", "description": "what went wrong and what to do"},
            "code": {"type": "string"},
            "field": {"type": "string", "description": "the parameter or field at fault"},
            "problems": {"type": "array", "items": {"type": "object"}},
        },
    })
}

fn page() -> Value {
    json!({"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next_cursor": {"type": ["string", "null"]},
    }})
}

fn object() -> Value {
    json!({"type": "object"})
}

fn json_ok(
    status: &'static str,
    schema: Value,
) -> Vec<(&'static str, Option<(&'static str, Value)>)> {
    vec![(status, Some(("application/json", schema)))]
}

fn any_json() -> Vec<(&'static str, Value)> {
    vec![("application/json", json!({}))]
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    axum::Json(DOC.get_or_init(document).clone()).into_response()
}
