//! The method table: each declared action (`model::api`) with the function that serves it. One
//! generic path decodes the parameters into the action's type, serves it and encodes the
//! result, so an action is one declaration in model plus its `Serve` impl here.

use std::future::Future;
use std::pin::Pin;

use model::api::{Action, Declaration};
use model::fault::FaultCode;
use model::xmlrpc::{MethodResponse, Value, to_value};

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

    pub fn internal(message: impl Into<String>) -> Fault {
        Fault::new(FaultCode::Internal, message)
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
        Fault::new(e.fault_code(), e.to_string())
    }
}

pub type MethodResult = Result<Value, Fault>;
pub type MethodFuture<'a> = Pin<Box<dyn Future<Output = MethodResult> + Send + 'a>>;
type Handler = for<'a> fn(&'a Api, Vec<Value>) -> MethodFuture<'a>;
type Check = fn(&[Value]) -> Result<(), Fault>;

/// How apid answers one action: the routing to its owner, and the API's own limits (deadlines
/// within the 30 s method budget). The action's shape was checked when it was decoded.
pub trait Serve: Action {
    fn serve(self, api: &Api) -> impl Future<Output = Result<Self::Result, Fault>> + Send;
}

#[derive(Clone)]
pub struct Method {
    pub decl: &'static Declaration,
    handler: Handler,
    check: Check,
}

/// The table entry of action `A`.
pub fn method<A: Serve>() -> Method {
    Method {
        decl: &A::DECL,
        handler: run::<A>,
        check: check::<A>,
    }
}

fn check<A: Serve>(params: &[Value]) -> Result<(), Fault> {
    A::from_params(params.to_vec())
        .map(drop)
        .map_err(Fault::bad_params)
}

fn run<A: Serve>(api: &Api, params: Vec<Value>) -> MethodFuture<'_> {
    Box::pin(async move {
        let call = A::from_params(params).map_err(Fault::bad_params)?;
        let result = call.serve(api).await?;
        to_value(&result).map_err(|e| Fault::internal(format!("{}: {e}", A::DECL.name)))
    })
}

impl Method {
    pub fn call<'a>(&self, api: &'a Api, params: Vec<Value>) -> MethodFuture<'a> {
        (self.handler)(api, params)
    }

    /// Whether `params` decode into the action's parameters (nothing is served).
    pub fn check(&self, params: &[Value]) -> Result<(), Fault> {
        (self.check)(params)
    }
}

#[derive(Clone)]
pub struct Registry {
    methods: Vec<Method>,
}

impl Registry {
    pub fn new(mut methods: Vec<Method>) -> Registry {
        methods.sort_by_key(|m| m.decl.name);
        Registry { methods }
    }

    pub fn find(&self, name: &str) -> Option<&Method> {
        self.methods
            .binary_search_by_key(&name, |m| m.decl.name)
            .ok()
            .map(|i| &self.methods[i])
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.methods.iter().map(|m| m.decl.name)
    }
}
