//! Reading host.toml into `HostConfig`. (Being built: see the model helper's work.)

use std::path::Path;

use super::{ConfigErrors, Diagnostic, HostConfig};

/// Reads and validates `path`. Diagnostics name the file as given.
pub fn load(path: &Path) -> Result<HostConfig, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&name, &text),
        Err(e) => Err(ConfigErrors(vec![Diagnostic {
            file: name,
            line: 1,
            col: 1,
            message: format!("cannot read the file: {e}"),
        }])),
    }
}

/// Parses and validates `text`; `file` is the name diagnostics carry.
pub fn parse(file: &str, text: &str) -> Result<HostConfig, ConfigErrors> {
    let _ = text;
    Err(ConfigErrors(vec![Diagnostic {
        file: file.to_string(),
        line: 1,
        col: 1,
        message: "parser not written yet".into(),
    }]))
}
