//! The method table: every API method with its signature, help text and handler, so that
//! dispatch and the `system.*` introspection methods read from one place.

use std::future::Future;
use std::pin::Pin;

use model::fault::FaultCode;
use model::xmlrpc::{MethodResponse, Value};

use super::Api;

/// A method's failure, returned to the client as an XML-RPC fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub code: FaultCode,
    pub message: String,
}

impl Fault {
    pub fn new(code: FaultCode, message: impl Into<String>) -> Fault {
        Fault {
            code,
            message: message.into(),
        }
    }

    pub fn bad_params(message: impl Into<String>) -> Fault {
        Fault::new(FaultCode::BadParams, message)
    }

    pub fn into_response(self) -> MethodResponse {
        MethodResponse::Fault {
            code: self.code.code(),
            message: self.message,
        }
    }
}

impl From<crate::bus::BusError> for Fault {
    fn from(e: crate::bus::BusError) -> Fault {
        use crate::bus::{BusError, Rejection};
        if let BusError::Rejected { kind, message } = e {
            let code = match kind {
                Rejection::InvalidArgs => FaultCode::BadParams,
                Rejection::NotFound => FaultCode::NotFound,
                Rejection::Conflict => FaultCode::Conflict,
                Rejection::Busy => FaultCode::Busy,
                Rejection::Failed => FaultCode::Internal,
            };
            return Fault::new(code, message);
        }
        let code = if e.is_transient() {
            FaultCode::Busy
        } else {
            FaultCode::Internal
        };
        Fault::new(code, e.to_string())
    }
}

pub type MethodResult = Result<Value, Fault>;
pub type MethodFuture<'a> = Pin<Box<dyn Future<Output = MethodResult> + Send + 'a>>;
pub type Handler = for<'a> fn(&'a Api, Vec<Value>) -> MethodFuture<'a>;

pub struct Method {
    pub name: &'static str,
    /// The return type first, then the parameter types, in XML-RPC type names. A trailing
    /// parameter type ending in `?` may be left out (`["boolean", "string", "int?"]`).
    pub signature: &'static [&'static str],
    pub help: &'static str,
    pub handler: Handler,
}

impl Method {
    /// The parameter types, `?` removed, and how many of them are required.
    fn params(&self) -> (Vec<&'static str>, usize) {
        let wanted = &self.signature[1..];
        let required = wanted.iter().take_while(|t| !t.ends_with('?')).count();
        (
            wanted.iter().map(|t| t.trim_end_matches('?')).collect(),
            required,
        )
    }

    /// Every signature the method has, as `system.methodSignature` lists them: one per
    /// number of parameters it takes.
    pub fn signatures(&self) -> Vec<Vec<&'static str>> {
        let (wanted, required) = self.params();
        let ret = self.signature[0];
        (required..=wanted.len())
            .map(|n| {
                std::iter::once(ret)
                    .chain(wanted[..n].iter().copied())
                    .collect()
            })
            .collect()
    }

    /// Checks the parameter count and types against the signature, so that handlers only see
    /// what they declared.
    pub fn check_params(&self, params: &[Value]) -> Result<(), Fault> {
        let (wanted, required) = self.params();
        if params.len() < required || params.len() > wanted.len() {
            let count = if required == wanted.len() {
                format!(
                    "{} parameter{}",
                    wanted.len(),
                    if wanted.len() == 1 { "" } else { "s" }
                )
            } else {
                format!("{required} to {} parameters", wanted.len())
            };
            return Err(Fault::bad_params(format!(
                "{} takes {count} ({}), got {}",
                self.name,
                if wanted.is_empty() {
                    "none".to_string()
                } else {
                    self.signature[1..].join(", ")
                },
                params.len()
            )));
        }
        for (i, (p, want)) in params.iter().zip(&wanted).enumerate() {
            let ok = match *want {
                "int" => matches!(p, Value::Int(_) | Value::I8(_)),
                other => p.type_name() == other,
            };
            if !ok {
                return Err(Fault::bad_params(format!(
                    "{}: parameter {} must be {}, got {}",
                    self.name,
                    i + 1,
                    want,
                    p.type_name()
                )));
            }
        }
        Ok(())
    }
}

pub struct Registry {
    methods: Vec<Method>,
}

impl Registry {
    pub fn new(mut methods: Vec<Method>) -> Registry {
        methods.sort_by_key(|m| m.name);
        Registry { methods }
    }

    pub fn find(&self, name: &str) -> Option<&Method> {
        self.methods
            .binary_search_by_key(&name, |m| m.name)
            .ok()
            .map(|i| &self.methods[i])
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.methods.iter().map(|m| m.name)
    }
}
