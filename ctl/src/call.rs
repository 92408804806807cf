//! A call as cairnctl sends it: built from an action's typed parameters (`model::api`), so
//! the method name and the parameters' order and types come from the declaration apid serves.

use model::api::Action;
use model::xmlrpc::{EncodeError, Value};

/// The method name and positional parameters of one call.
pub type Call = (&'static str, Vec<Value>);

/// The call of action `a`.
pub fn call<A: Action>(a: A) -> Result<Call, EncodeError> {
    Ok((A::DECL.name, a.to_params()?))
}
