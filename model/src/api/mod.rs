//! The API's actions, each declared once: its XML-RPC name, typed parameters and result, help
//! text and owning daemon. apid decodes calls straight into these types and serves
//! `system.listMethods`/`methodHelp`/`methodSignature` from the declarations; cairnctl builds its
//! calls from the same types; docs/api.md's method list is checked against them.
//!
//! The pattern is Firecracker's `vmm_config` structs + `VmmAction`: a parameter struct per
//! action, whose fields are the XML-RPC parameters in order (an `Option` field is an optional
//! trailing parameter).

pub mod ct;
pub mod event;
pub mod host;
pub mod net;
pub mod storage;
pub mod system;
pub mod task;
pub mod vm;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::xmlrpc::{Value, de::from_params};

/// Which process answers an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// apid itself (`system.*`, and `host.info`, which it assembles from what the daemons push).
    Apid,
    Init,
    Hostd,
    Netd,
    Stord,
}

/// One XML-RPC parameter of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    /// The XML-RPC type name (`string`, `int`, `struct`, …).
    pub ty: &'static str,
    /// Optional parameters come last and may be left out.
    pub optional: bool,
}

/// What an action is, as introspection and docs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declaration {
    pub name: &'static str,
    pub owner: Owner,
    pub help: &'static str,
    pub params: &'static [Param],
    /// The result's XML-RPC type name.
    pub result: &'static str,
}

impl Declaration {
    fn required(&self) -> usize {
        self.params.iter().take_while(|p| !p.optional).count()
    }

    /// Every signature, as `system.methodSignature` lists them: one per number of parameters
    /// the action takes, the result type first.
    pub fn signatures(&self) -> Vec<Vec<&'static str>> {
        (self.required()..=self.params.len())
            .map(|n| {
                std::iter::once(self.result)
                    .chain(self.params[..n].iter().map(|p| p.ty))
                    .collect()
            })
            .collect()
    }

    /// `name(a, b[, c])`, as docs/api.md heads each method.
    pub fn synopsis(&self) -> String {
        let mut out = format!("{}(", self.name);
        for (i, p) in self.params.iter().enumerate() {
            if p.optional {
                out.push('[');
            }
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(p.name);
        }
        out.push_str(&"]".repeat(self.params.iter().filter(|p| p.optional).count()));
        out.push(')');
        out
    }

    /// Checks the parameter count: a call with too few or too many parameters is refused
    /// with what the action takes.
    pub fn check_count(&self, got: usize) -> Result<(), String> {
        let (required, all) = (self.required(), self.params.len());
        if (required..=all).contains(&got) {
            return Ok(());
        }
        let count = if required == all {
            format!("{all} parameter{}", if all == 1 { "" } else { "s" })
        } else {
            format!("{required} to {all} parameters")
        };
        let types = if all == 0 {
            "none".to_string()
        } else {
            self.params
                .iter()
                .map(|p| format!("{} {}{}", p.ty, p.name, if p.optional { "?" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(format!("{} takes {count} ({types}), got {got}", self.name))
    }
}

/// The XML-RPC type a Rust type travels as, for signatures.
pub trait RpcType {
    const NAME: &'static str;
    const OPTIONAL: bool = false;
}

macro_rules! rpc_type {
    ($name:literal: $($t:ty),*) => {
        $(impl $crate::api::RpcType for $t { const NAME: &'static str = $name; })*
    };
}
pub(crate) use rpc_type;

rpc_type!("string": String);
rpc_type!("boolean": bool);
rpc_type!("int": u16, u32, i32, u64);

impl<T: RpcType> RpcType for Option<T> {
    const NAME: &'static str = T::NAME;
    const OPTIONAL: bool = true;
}

impl<T> RpcType for Vec<T> {
    const NAME: &'static str = "array";
}

/// One API action: its parameters are `Self`, its answer `Self::Result`.
pub trait Action: Serialize + DeserializeOwned + Send + Sized + 'static {
    type Result: Serialize + DeserializeOwned + RpcType + Send;
    const DECL: Declaration;

    /// Decodes a call's positional parameters: the count first, then each parameter's shape
    /// (types, unknown or missing struct members), every error naming where it is.
    fn from_params(params: Vec<Value>) -> Result<Self, String> {
        Self::DECL.check_count(params.len())?;
        let names = Self::DECL.params.iter().map(|p| p.name);
        from_params(params, names).map_err(|e| format!("{}: {e}", Self::DECL.name))
    }

    /// The call's positional parameters, as a client sends them.
    fn to_params(&self) -> Result<Vec<Value>, crate::xmlrpc::ser::EncodeError> {
        let Value::Struct(mut members) = crate::xmlrpc::ser::to_value(self)? else {
            return Ok(Vec::new());
        };
        // Parameters in declaration order; a left-out optional one ends the list.
        Ok(Self::DECL
            .params
            .iter()
            .map_while(|p| members.remove(p.name))
            .collect())
    }
}

/// Declares actions: a parameter struct for each, its `Action` impl, and a list of the
/// declarations under `$list`.
macro_rules! actions {
    ($list:ident; $(
        $ty:ident = $name:literal, $owner:ident, ($( $field:ident : $fty:ty ),* $(,)?) -> $ret:ty,
        $help:literal;
    )*) => {
        $(
            #[doc = $help]
            #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            pub struct $ty {
                $(pub $field: $fty,)*
            }

            impl $crate::api::Action for $ty {
                type Result = $ret;
                const DECL: $crate::api::Declaration = $crate::api::Declaration {
                    name: $name,
                    owner: $crate::api::Owner::$owner,
                    help: $help,
                    params: &[$($crate::api::Param {
                        name: stringify!($field),
                        ty: <$fty as $crate::api::RpcType>::NAME,
                        optional: <$fty as $crate::api::RpcType>::OPTIONAL,
                    }),*],
                    result: <$ret as $crate::api::RpcType>::NAME,
                };
            }
        )*

        /// Every action this module declares.
        pub const $list: &[&$crate::api::Declaration] = &[$(&<$ty as $crate::api::Action>::DECL),*];

        /// Calls `v` once with each action this module declares, by type.
        pub fn visit_actions(v: &mut impl $crate::api::ActionVisitor) {
            $(v.visit::<$ty>();)*
        }
    };
}
pub(crate) use actions;

/// Every declared action, sorted by name.
pub fn declarations() -> Vec<&'static Declaration> {
    let mut all: Vec<&'static Declaration> = [
        system::ACTIONS,
        host::ACTIONS,
        net::ACTIONS,
        storage::ACTIONS,
        ct::ACTIONS,
        vm::ACTIONS,
        event::ACTIONS,
        task::ACTIONS,
    ]
    .concat();
    all.sort_by_key(|d| d.name);
    all
}

/// Code that wants every action by its type, not only its declaration: the fuzzers build
/// valid calls and decode mutated ones through this, so an action is covered the moment it is
/// declared, with no list of types to keep up to date by hand.
pub trait ActionVisitor {
    fn visit<A: Action>(&mut self);
}

/// Calls `v` once with every declared action.
pub fn visit_actions(v: &mut impl ActionVisitor) {
    system::visit_actions(v);
    host::visit_actions(v);
    net::visit_actions(v);
    storage::visit_actions(v);
    ct::visit_actions(v);
    vm::visit_actions(v);
    event::visit_actions(v);
    task::visit_actions(v);
}

/// The declaration of `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Declaration> {
    declarations().into_iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests;

/// The method index of docs/api.md: one row per declared action, made from the declarations
/// (a test keeps the document's copy equal to this).
pub fn docs_index() -> String {
    let owner = |o: Owner| match o {
        Owner::Apid => "apid",
        Owner::Init => "init",
        Owner::Hostd => "hostd",
        Owner::Netd => "netd",
        Owner::Stord => "stord",
    };
    let mut out = String::from(
        "| Method | Parameters | Answer | Served by | What it does |\n|---|---|---|---|---|\n",
    );
    for d in declarations() {
        let params = d
            .params
            .iter()
            .map(|p| format!("{} {}{}", p.ty, p.name, if p.optional { "?" } else { "" }))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            d.name,
            if params.is_empty() {
                "—".into()
            } else {
                params
            },
            d.result,
            owner(d.owner),
            d.help.replace('|', "\\|"),
        ));
    }
    out
}
