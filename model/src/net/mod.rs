//! Network objects as the API carries them: over D-Bus as JSON, over XML-RPC as structs, in
//! cairnctl as flags. (Network and port specs: being written with the netd issue.)

mod limits;

pub use limits::{Limits, Rate};
