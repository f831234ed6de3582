//! The line's fields: taking each one with its type checked, refusing the ones left over.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::run::RunId;
use crate::types::{AgentId, JsonText, SessionId};

pub(super) struct Fields {
    pub(super) op: &'static str,
    pub(super) map: Map<String, Value>,
}

impl Fields {
    pub(super) fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    pub(super) fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::invalid(
                field_name(key),
                format!("must be a string, got {}", type_name(&other)),
            )),
        }
    }

    pub(super) fn required_string(&mut self, key: &'static str) -> Result<String> {
        self.string(key)?
            .ok_or_else(|| Error::invalid(field_name(key), format!("missing for op {:?}", self.op)))
    }

    pub(super) fn u64(&mut self, key: &'static str) -> Result<Option<u64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                Error::invalid(
                    field_name(key),
                    format!("{n} is not a non-negative integer"),
                )
            }),
            Some(other) => Err(Error::invalid(
                field_name(key),
                format!("must be a number, got {}", type_name(&other)),
            )),
        }
    }

    /// A number of seconds: finite, from 0 to `max`, as milliseconds.
    pub(super) fn seconds_ms(&mut self, key: &'static str, max: f64) -> Result<Option<u64>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(s) if s.is_finite() && (0.0..=max).contains(&s) => {
                    Ok(Some((s * 1000.0).round() as u64))
                }
                _ => Err(Error::invalid(
                    field_name(key),
                    format!("{n} is not a number of seconds from 0 to {max}"),
                )),
            },
            Some(other) => Err(Error::invalid(
                field_name(key),
                format!("must be a number, got {}", type_name(&other)),
            )),
        }
    }

    pub(super) fn run_id(&mut self, key: &'static str) -> Result<Option<RunId>> {
        match self.u64(key)? {
            None => Ok(None),
            Some(0) => Err(Error::invalid(field_name(key), "run ids start at 1")),
            Some(n) => Ok(Some(RunId(n))),
        }
    }

    pub(super) fn bool(&mut self, key: &'static str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(Error::invalid(
                field_name(key),
                format!("must be true or false, got {}", type_name(&other)),
            )),
        }
    }

    pub(super) fn json(&mut self, key: &'static str) -> Result<Option<JsonText>> {
        self.take(key).map(|v| json_value(key, &v)).transpose()
    }

    pub(super) fn session(&mut self) -> Result<SessionId> {
        self.optional_session()?.ok_or_else(|| {
            Error::invalid(
                "session id",
                format!("missing (`id` or `session_id`) for op {:?}", self.op),
            )
        })
    }

    /// The session named by `id` or `session_id` (both may be given if they agree), if any.
    pub(super) fn optional_session(&mut self) -> Result<Option<SessionId>> {
        match (self.string("id")?, self.string("session_id")?) {
            (Some(a), Some(b)) if a != b => Err(Error::invalid(
                "session id",
                "`id` and `session_id` disagree",
            )),
            (Some(s), _) | (None, Some(s)) => Ok(Some(SessionId::new(&s)?)),
            (None, None) => Ok(None),
        }
    }

    pub(super) fn agent(&mut self) -> Result<AgentId> {
        AgentId::new(&self.required_string("agent")?)
    }

    pub(super) fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(Error::invalid(
                "field",
                format!("unknown field {k:?} for op {:?}", self.op),
            )),
        }
    }
}

/// A JSON value of the line as `JsonText`, an error naming `field`.
pub(super) fn json_value(field: &'static str, v: &Value) -> Result<JsonText> {
    JsonText::from_value(v).map_err(|e| match e {
        Error::InvalidInput { reason, .. } => Error::invalid(field, reason),
        other => other,
    })
}

pub(super) fn field_name(key: &'static str) -> &'static str {
    key
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
