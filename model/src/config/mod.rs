//! The `host.toml` schema. `load`/`parse` validate the *whole* file and return every problem as
//! `file:line:col: message`; nothing downstream ever sees a half-valid config.

mod diagnostics;
mod parse;
mod types;

pub use diagnostics::{ConfigErrors, Diagnostic};
pub use parse::{load, parse};
pub use types::*;
