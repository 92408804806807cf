//! The XML-RPC wire format (<http://xmlrpc.com/spec.md>) as `apid` serves it and `cairnctl`
//! speaks it.
//!
//! The parser is the network boundary's first line: it refuses any DOCTYPE (so no entity can be
//! declared, let alone expanded), caps element nesting and element count, and reports structure
//! errors with what was expected where. Every error maps to fault code 100 (`parse_error`).

pub mod de;
mod json;
mod parse;
pub mod ser;
mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use de::{DecodeError, from_value};
pub use parse::{parse_call, parse_call_with, parse_response, parse_response_with};
pub use ser::{EncodeError, to_value};
pub use write::{write_call, write_response, write_value};

/// A struct's members. Ordered by name so that output is deterministic.
pub type Struct = BTreeMap<String, Value>;

/// One XML-RPC value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `<int>` or `<i4>`.
    Int(i32),
    /// `<i8>`, an extension some clients send; accepted on input, written as `<i8>`.
    I8(i64),
    Bool(bool),
    String(String),
    Double(f64),
    /// `<dateTime.iso8601>`, kept as the text the peer sent (e.g. `19980717T14:08:55`).
    DateTime(String),
    Base64(Vec<u8>),
    Struct(Struct),
    Array(Vec<Value>),
    /// `<nil/>`, an extension (Python's `allow_none`); accepted on input.
    Nil,
}

impl Value {
    /// The XML-RPC type name, for "expected X, got Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::I8(_) => "i8",
            Value::Bool(_) => "boolean",
            Value::String(_) => "string",
            Value::Double(_) => "double",
            Value::DateTime(_) => "dateTime.iso8601",
            Value::Base64(_) => "base64",
            Value::Struct(_) => "struct",
            Value::Array(_) => "array",
            Value::Nil => "nil",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a 64-bit integer, whether it came as `<int>` or `<i8>`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(i64::from(*i)),
            Value::I8(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_struct(&self) -> Option<&Struct> {
        match self {
            Value::Struct(s) => Some(s),
            _ => None,
        }
    }

    /// A struct from `(name, value)` pairs.
    pub fn structure<K: Into<String>>(members: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Struct(members.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// An unsigned count as XML-RPC carries it: `<int>` when it fits (what every client
    /// understands), `<i8>` otherwise.
    pub fn from_u64(n: u64) -> Value {
        match i32::try_from(n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::I8(i64::try_from(n).unwrap_or(i64::MAX)),
        }
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}

impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::Array(v)
    }
}

impl From<Struct> for Value {
    fn from(v: Struct) -> Self {
        Value::Struct(v)
    }
}

/// A `<methodCall>`.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodCall {
    pub name: String,
    pub params: Vec<Value>,
}

/// A `<methodResponse>`: one value, or a fault.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodResponse {
    Ok(Value),
    Fault { code: i32, message: String },
}

/// Bounds the parser enforces. The defaults suit requests of up to a few MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How deeply arrays and structs may nest inside one another.
    pub max_depth: usize,
    /// How many elements the whole document may contain.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_elements: 250_000,
        }
    }
}

/// Why a document is not acceptable XML-RPC. Positions are byte offsets into the document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("not well-formed XML at byte {pos}: {message}")]
    Xml { pos: u64, message: String },
    #[error("DOCTYPE at byte {pos} is refused: XML-RPC needs no DTD and entities are not expanded")]
    Doctype { pos: u64 },
    #[error(
        "unknown entity &{name}; at byte {pos}: only the five predefined entities and character references are allowed"
    )]
    Entity { pos: u64, name: String },
    #[error("nesting deeper than {limit} levels at byte {pos}")]
    TooDeep { pos: u64, limit: usize },
    #[error("more than {limit} elements in the document")]
    TooManyElements { limit: usize },
    #[error("at byte {pos}: expected {expected}, found {found}")]
    Structure {
        pos: u64,
        expected: String,
        found: String,
    },
    #[error("at byte {pos}: {what} inside {place} is not allowed: XML 1.0 has no such character")]
    ForbiddenChar {
        pos: u64,
        /// The character, and how it was written when it came as a character reference.
        what: String,
        /// The element it was found in (`<string>`, `<name>`, …) or the kind of markup.
        place: String,
    },
    #[error("at byte {pos}: {text:?} is not a valid {kind}")]
    BadScalar {
        pos: u64,
        kind: &'static str,
        text: String,
    },
}

impl Error {
    /// The API fault every parse problem is reported as.
    pub fn fault_code(&self) -> crate::fault::FaultCode {
        crate::fault::FaultCode::Parse
    }
}
