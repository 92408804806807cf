//! The `host.toml` schema. `load`/`parse` validate the *whole* file and return every problem as
//! `file:line:col: message`; nothing downstream ever sees a half-valid config.

mod diagnostics;
mod diff;
mod items;
mod names;
mod net;
mod parse;
mod read;
mod types;
mod validate;
mod walk;

pub use diagnostics::{ConfigErrors, Diagnostic};
pub use diff::diff;
pub use names::{NAME_MAX, NETWORK_NAME_MAX, is_name};
pub use net::{CidrError, host_address_problem, parse_cidr, parse_ipv4_cidr};
pub use parse::{load, parse};
pub use types::*;
