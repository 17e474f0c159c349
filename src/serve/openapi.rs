//! The OpenAPI 3.1 document of the JSON API, served at `/api/v1/openapi.json`. Tests check that
//! every route of [`super::api::router`] is described here and every described path answers.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": schema}}
    })
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"},
           "description": "A definition's name"})
}

fn profile_params() -> Value {
    json!([
        {"name": "entity", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "key", "in": "path", "required": true, "schema": {"type": "string"},
         "description": "An identity key of the entity, or `canonical_id`"},
        {"name": "value", "in": "path", "required": true, "schema": {"type": "string"},
         "description": "The key's value, as stored or as users type it (it is normalized as the entity normalizes it)"}
    ])
}

/// The paths the document describes (with `{param}` placeholders), for tests.
pub const PATHS: [&str; 15] = [
    "/definitions",
    "/definitions/{name}",
    "/definitions/{name}/versions",
    "/definitions/{name}/sql",
    "/definitions/{name}/lineage",
    "/definitions/{name}/stats",
    "/runs",
    "/features",
    "/profiles/{entity}/{key}/{value}",
    "/profiles/{entity}/{key}/{value}/segments",
    "/transitions",
    "/live",
    "/live/{entity}/{key}/{value}",
    "/keys",
    "/keys/{name}",
];

pub fn document() -> Value {
    let errors = |mut responses: Value| {
        responses["401"] = error_response("No key, or a key that is not valid");
        responses["404"] = error_response("An unknown name, key or profile");
        responses
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cdp registry API",
            "version": "1",
            "description": "Definitions, versions, lineage, statistics and runs of a cdp project, and its online features and profiles. Every request needs an API key (`cdp keys add`). Values that show personal data are masked for keys without the `pii` right."
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/definitions": {"get": {
                "summary": "Definitions, optionally filtered by kind and searched by keywords",
                "parameters": [
                    {"name": "kind", "in": "query", "schema": {"type": "string"}, "description": "source, entity, attribute, behavior, feature, segment, journey, metric, activation"},
                    {"name": "q", "in": "query", "schema": {"type": "string"}, "description": "Words that must all appear in the name, description, owner or tags"}
                ],
                "responses": errors(json!({"200": ok("Matching definitions, names that match first", json!({"type": "object", "properties": {"definitions": {"type": "array", "items": {"$ref": "#/components/schemas/DefinitionSummary"}}}}))}))
            }},
            "/definitions/{name}": {"get": {
                "summary": "One definition: metadata, canonical source text, direct lineage",
                "parameters": [name_param()],
                "responses": errors(json!({"200": ok("The definition", json!({"$ref": "#/components/schemas/Definition"}))}))
            }},
            "/definitions/{name}/versions": {"get": {
                "summary": "Every recorded version of a definition (`cdp apply`), oldest first",
                "parameters": [name_param()],
                "responses": errors(json!({"200": ok("Versions", json!({"type": "object", "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}}}}))}))
            }},
            "/definitions/{name}/sql": {"get": {
                "summary": "The compiled SQL statements implementing a definition",
                "parameters": [name_param(), {"name": "dialect", "in": "query", "schema": {"type": "string", "enum": ["datafusion", "trino", "spark", "postgres", "duckdb"], "default": "datafusion"}}],
                "responses": errors(json!({
                    "200": ok("SQL", json!({"type": "object", "properties": {"name": {"type": "string"}, "dialect": {"type": "string"}, "sql": {"type": "string"}}})),
                    "400": error_response("An unknown dialect")
                }))
            }},
            "/definitions/{name}/lineage": {"get": {
                "summary": "Everything upstream and downstream of a definition, with the edges among them (from the definition read to its reader)",
                "parameters": [name_param()],
                "responses": errors(json!({"200": ok("Lineage", json!({"type": "object", "properties": {"name": {"type": "string"}, "nodes": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "kind": {"type": "string"}}}}, "edges": {"type": "array", "items": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}}}}}}))}))
            }},
            "/definitions/{name}/stats": {"get": {
                "summary": "Statistics of an attribute or feature (count, nulls, distinct, min/max/mean, histogram), a segment's population, or a journey's steps and outcomes, per committed run",
                "parameters": [name_param()],
                "responses": errors(json!({"200": ok("Statistics per run, oldest first", json!({"type": "object"}))}))
            }},
            "/runs": {"get": {
                "summary": "Committed runs, newest first, with per-step timings and row counts",
                "responses": errors(json!({"200": ok("Runs", json!({"type": "object"}))}))
            }},
            "/features": {"post": {
                "summary": "Online feature values for one or many profiles",
                "description": "Column-oriented like the established feature servers: the first result is the key column, then one result per feature, each with a value, a status (PRESENT, NULL_VALUE, NOT_FOUND, MASKED) and the as-of time of the run that computed it per row.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeaturesRequest"}, "example": {"features": ["lifetime_value", "orders_30d", "high_value"], "entities": {"email": ["ana@example.com"]}}}}},
                "responses": errors(json!({
                    "200": ok("Values", json!({"$ref": "#/components/schemas/FeaturesResponse"})),
                    "400": error_response("A malformed request"),
                    "503": error_response("No run committed yet")
                }))
            }},
            "/profiles/{entity}/{key}/{value}": {"get": {
                "summary": "A profile by any identity key: keys, attribute and feature values, segments, journey positions. `run` names the batch run the values are from, or is `live` when the streaming operators wrote them as events arrived (`as_of` is then the stream's clock)",
                "parameters": profile_params(),
                "responses": errors(json!({"200": ok("The profile", json!({"type": "object"}))}))
            }},
            "/profiles/{entity}/{key}/{value}/segments": {"get": {
                "summary": "The segments a profile is a member of",
                "parameters": profile_params(),
                "responses": errors(json!({"200": ok("Memberships", json!({"type": "object", "properties": {"canonical_id": {"type": "string"}, "segments": {"type": "array", "items": {"type": "string"}}}})), "503": error_response("The operators could not start (stream_unavailable: the reason; tried again after 10 s)")}))
            }},
            "/transitions": {"get": {
                "summary": "The newest segment entries and exits (with exits caused by time passing), journey steps and activations, newest first",
                "parameters": [
                    {"name": "definition", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Only this definition's"},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "default": 100, "maximum": 10000}}
                ],
                "responses": errors(json!({"200": ok("Transitions", json!({"type": "object", "properties": {"transitions": {"type": "array", "items": {"type": "object"}}}})), "400": error_response("A malformed query")}))
            }},
            "/live": {"get": {
                "summary": "What the streaming operators have seen: events, rows, late rows kept aside, profiles, state bytes, clock and watermark; profile records written to the online store and the batch run it holds under them",
                "responses": errors(json!({"200": ok("Counts", json!({"type": "object"})), "503": error_response("The project does not load, or the operators could not start (stream_unavailable: the reason; tried again after 10 s)")}))
            }},
            "/live/{entity}/{key}/{value}": {"get": {
                "summary": "A profile's attributes, features and segments as the streaming operators hold them: every event sent to the tracking API counted",
                "parameters": profile_params(),
                "responses": errors(json!({"200": ok("The live profile", json!({"type": "object", "properties": {"canonical_id": {"type": "string"}, "as_of_micros": {"type": "integer"}, "attributes": {"type": "object"}, "features": {"type": "object"}, "segments": {"type": "array", "items": {"type": "string"}}}}))}))
            }},
            "/keys": {
                "get": {"summary": "API keys (admin)", "responses": errors(json!({"200": ok("Keys, without their secrets", json!({"type": "object"})), "403": error_response("Not an admin key")}))},
                "post": {"summary": "Make an API key (admin); the response holds the key, shown this once",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["name", "role"], "properties": {"name": {"type": "string"}, "role": {"type": "string", "enum": ["read", "admin"]}, "pii": {"type": "boolean", "default": false}}}}}},
                    "responses": errors(json!({"201": ok("The new key", json!({"type": "object"})), "403": error_response("Not an admin key"), "409": error_response("The name is taken")}))}
            },
            "/keys/{name}": {"delete": {
                "summary": "Revoke an API key (admin)",
                "parameters": [name_param()],
                "responses": errors(json!({"200": ok("Revoked", json!({"type": "object"})), "403": error_response("Not an admin key")}))
            }}
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "DefinitionSummary": {"type": "object", "properties": {
                    "name": {"type": "string"}, "kind": {"type": "string"}, "description": {"type": ["string", "null"]},
                    "owner": {"type": ["string", "null"]}, "tags": {"type": "array", "items": {"type": "string"}},
                    "file": {"type": "string"}, "line": {"type": "integer"}}},
                "Definition": {"allOf": [{"$ref": "#/components/schemas/DefinitionSummary"}, {"type": "object", "properties": {
                    "text": {"type": "string"}, "hash": {"type": "string"}, "pii": {"type": "boolean"},
                    "upstream": {"type": "array", "items": {"type": "string"}},
                    "downstream": {"type": "array", "items": {"type": "string"}}}}]},
                "Version": {"type": "object", "properties": {
                    "version": {"type": "integer"}, "hash": {"type": "string"}, "snapshot": {"type": "integer"},
                    "author": {"type": ["string", "null"]}, "time": {"type": ["string", "null"]},
                    "message": {"type": ["string", "null"]}, "text": {"type": "string"}}},
                "FeaturesRequest": {"type": "object", "required": ["features", "entities"], "additionalProperties": false, "properties": {
                    "entity": {"type": "string", "description": "Needed when the project has several entities"},
                    "features": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "Attributes, features or segments (a segment's value is membership)"},
                    "entities": {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": {"type": "array", "maxItems": 1000, "items": {"type": ["string", "number"]}}, "description": "One identity key (or canonical_id) with the values to look up"},
                    "live": {"type": "boolean", "default": false, "description": "Serve the streaming operators' values, which count every tracked event at once, instead of the latest run's"}}},
                "FeaturesResponse": {"type": "object", "properties": {
                    "metadata": {"type": "object", "properties": {"entity": {"type": "string"}, "feature_names": {"type": "array", "items": {"type": "string"}}, "canonical_ids": {"type": "array", "items": {"type": ["string", "null"]}}}},
                    "results": {"type": "array", "items": {"type": "object", "properties": {
                        "values": {"type": "array"},
                        "statuses": {"type": "array", "items": {"type": "string", "enum": ["PRESENT", "NULL_VALUE", "NOT_FOUND", "MASKED"]}},
                        "event_timestamps": {"type": "array", "items": {"type": ["string", "null"]}}}}}}}
            }
        }
    })
}
