//! A webhook body as JSON, and field access whose errors name the field's path.

use super::ForgeError;
use serde_json::{Map, Value};

/// The JSON of a delivery: the body itself, or the `payload` field of a
/// form-encoded body (`application/x-www-form-urlencoded`, GitHub's and Gitea's option).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Value, ForgeError> {
    let form = content_type.is_some_and(|ct| ct.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let value: Value = if form {
        let payload = form_urlencoded::parse(body).find(|(k, _)| k == "payload").map(|(_, v)| v.into_owned()).ok_or(ForgeError::NoFormPayload)?;
        serde_json::from_str(&payload)
    } else {
        serde_json::from_slice(body)
    }
    .map_err(|e| ForgeError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(ForgeError::Json("the payload is not a JSON object".into()));
    }
    Ok(value)
}

/// A JSON object together with its path in the payload, for error messages.
#[derive(Debug, Clone)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

/// `parent.key` (or `key` at the top).
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Obj<'a> {
    /// The payload's top-level object.
    pub fn root(v: &'a Value) -> Result<Obj<'a>, ForgeError> {
        Obj::at(v, "")
    }

    /// `v` as an object found at `path`.
    pub fn at(v: &'a Value, path: &str) -> Result<Obj<'a>, ForgeError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path: path.to_owned() }),
            _ => Err(ForgeError::WrongType { field: if path.is_empty() { "(payload)".into() } else { path.to_owned() }, expected: "an object" }),
        }
    }

    /// The field, or `None` when absent or null.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A required string field.
    pub fn str(&self, key: &str) -> Result<&'a str, ForgeError> {
        self.opt_str(key)?.ok_or_else(|| ForgeError::Missing(join(&self.path, key)))
    }

    /// An optional string field (absent or null → `None`).
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ForgeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ForgeError::WrongType { field: join(&self.path, key), expected: "a string" }),
        }
    }

    /// An optional number or string field, as text (ids are numbers on some forges).
    pub fn opt_scalar(&self, key: &str) -> Result<Option<String>, ForgeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ForgeError::WrongType { field: join(&self.path, key), expected: "a string or number" }),
        }
    }

    /// A required object field (its errors name `parent.key.…`).
    pub fn obj(&self, key: &str) -> Result<Obj<'a>, ForgeError> {
        self.opt_obj(key)?.ok_or_else(|| ForgeError::Missing(join(&self.path, key)))
    }

    /// An optional object field.
    pub fn opt_obj(&self, key: &str) -> Result<Option<Obj<'a>>, ForgeError> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Obj::at(v, &join(&self.path, key)).map(Some),
            Some(_) => Err(ForgeError::WrongType { field: join(&self.path, key), expected: "an object" }),
        }
    }

    /// An optional array field.
    pub fn opt_array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, ForgeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(ForgeError::WrongType { field: join(&self.path, key), expected: "an array" }),
        }
    }

    /// An optional boolean field.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ForgeError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ForgeError::WrongType { field: join(&self.path, key), expected: "true or false" }),
        }
    }
}
