//! Reading host.toml into `HostConfig`: TOML syntax first (one diagnostic, since nothing after
//! a syntax error can be trusted), then every section and every cross-reference, reporting all
//! problems in file order.

use std::path::Path;

use toml::de::DeTable;

use super::read::read_document;
use super::validate;
use super::walk::{LineIndex, Problems};
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
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let (line, col) = LineIndex::new(text).line_col(offset);
            return Err(ConfigErrors(vec![Diagnostic {
                file: file.to_string(),
                line,
                col,
                message: format!("invalid TOML: {}", e.message()),
            }]));
        }
    };
    let lines = LineIndex::new(text);
    let mut problems = Problems::default();
    let document = read_document(&mut problems, doc.get_ref());
    validate::check(&mut problems, &document, &lines);
    if !problems.is_empty() {
        return Err(ConfigErrors(problems.into_diagnostics(file, &lines)));
    }
    // With no problems reported every required value is present; if one is not, that is a
    // bug in the readers, and saying so beats returning a half-built config.
    document.build().ok_or_else(|| {
        ConfigErrors(vec![Diagnostic {
            file: file.to_string(),
            line: 1,
            col: 1,
            message: "internal error: the file passed validation but could not be built".into(),
        }])
    })
}
