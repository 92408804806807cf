//! Reading a spanned TOML tree field by field while collecting every problem with its position.
//!
//! Readers never stop at the first problem: each getter reports what is wrong and returns
//! `None`, and the caller carries on with the next field, so one run lists everything.

use std::ops::RangeInclusive;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::Diagnostic;
use crate::rules::Rule;
use crate::units::parse_size;

pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// A value with the byte offset where it was written, for diagnostics found later (duplicate
/// names, dangling references, overlapping subnets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct At<T> {
    pub at: usize,
    pub value: T,
}

/// Problems found so far, keyed by byte offset; they become `file:line:col` diagnostics at the
/// end, when the order they were found in no longer matters.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<(usize, String)>);

impl Problems {
    pub fn at(&mut self, offset: usize, message: impl Into<String>) {
        self.0.push((offset, message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In file order; problems at the same offset keep the order they were found in.
    pub fn into_diagnostics(mut self, file: &str, lines: &LineIndex<'_>) -> Vec<Diagnostic> {
        self.0.sort_by_key(|(offset, _)| *offset);
        self.0
            .into_iter()
            .map(|(offset, message)| {
                let (line, col) = lines.line_col(offset);
                Diagnostic {
                    file: file.to_string(),
                    line,
                    col,
                    message,
                }
            })
            .collect()
    }
}

/// Where each line of a text starts, found once: a file with thousands of problems would
/// otherwise be rescanned from the top for every position reported.
pub(super) struct LineIndex<'t> {
    text: &'t str,
    /// Byte offset of the first byte of each line; `starts[0]` is 0.
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub fn new(text: &'t str) -> Self {
        let starts = std::iter::once(0)
            .chain(
                text.bytes()
                    .enumerate()
                    .filter(|&(_, b)| b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        LineIndex { text, starts }
    }

    /// 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        // The number of line starts at or before `offset`; there is always one (0).
        self.starts.partition_point(|&start| start <= offset)
    }

    /// 1-based line and character column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line(offset);
        let line_start = self.starts.get(line - 1).copied().unwrap_or(0);
        // Offsets from the parser fall on character boundaries; if one ever did not, counting
        // bytes is a better column than none.
        let col = match self.text.get(line_start..offset) {
            Some(s) => s.chars().count(),
            None => offset - line_start,
        };
        (line, col + 1)
    }
}

/// How a value is named in "must be a string, not …" messages.
pub(super) fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string {:?}", s.as_ref()),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(f) => format!("the float {f}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        DeValue::Datetime(d) => format!("the datetime {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// One TOML table being read. `label` names it in messages: "[host]", "network \"lan\"".
pub(super) struct Table<'a, 'i> {
    entries: &'a DeTable<'i>,
    /// Where the table starts (its header, or its first key for implicit tables); missing keys
    /// are reported here because there is nothing closer to point at.
    pub at: usize,
    pub label: String,
}

impl<'a, 'i> Table<'a, 'i> {
    /// Reports every key not in `allowed` right away, so callers only look up known keys.
    pub fn new(
        p: &mut Problems,
        entries: &'a DeTable<'i>,
        at: usize,
        label: impl Into<String>,
        allowed: &[&str],
    ) -> Self {
        let label = label.into();
        report_unknown(p, entries, allowed, &format!("in {label}"));
        Table { entries, at, label }
    }

    /// The document itself, whose keys are the sections.
    pub fn top(p: &mut Problems, entries: &'a DeTable<'i>, allowed: &[&str]) -> Self {
        report_unknown(p, entries, allowed, "at the top level");
        Table {
            entries,
            at: 0,
            label: "the file".to_string(),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The field if present.
    pub fn opt<'t>(&'t self, key: &'t str) -> Option<Field<'t, 'a, 'i>> {
        self.entries.get(key).map(|value| Field {
            key,
            label: &self.label,
            value,
        })
    }

    /// The field, or a "missing the required key" problem at the table.
    pub fn req<'t>(&'t self, p: &mut Problems, key: &'t str) -> Option<Field<'t, 'a, 'i>> {
        let field = self.opt(key);
        if field.is_none() {
            p.at(
                self.at,
                format!("{} is missing the required key {key:?}", self.label),
            );
        }
        field
    }
}

fn report_unknown(p: &mut Problems, entries: &DeTable<'_>, allowed: &[&str], place: &str) {
    for (key, _) in entries.iter() {
        let name: &str = key.get_ref();
        if !allowed.contains(&name) {
            p.at(
                key.span().start,
                format!(
                    "unknown key {name:?} {place} (allowed: {})",
                    allowed.join(", ")
                ),
            );
        }
    }
}

/// One key's value inside a [`Table`], with what is needed to word messages about it.
pub(super) struct Field<'t, 'a, 'i> {
    pub key: &'t str,
    pub label: &'t str,
    pub value: &'a Value<'i>,
}

impl<'a, 'i> Field<'_, 'a, 'i> {
    pub fn at(&self) -> usize {
        self.value.span().start
    }

    /// Reports that the value has the wrong type.
    fn wrong_type(&self, p: &mut Problems, expected: &str) {
        p.at(
            self.at(),
            format!(
                "{} in {} must be {expected}, not {}",
                self.key,
                self.label,
                describe(self.value.get_ref())
            ),
        );
    }

    /// Reports a value of the right type that is still wrong: `{key} {shown} in {label} {problem}`.
    pub fn bad(&self, p: &mut Problems, shown: impl std::fmt::Display, problem: &str) {
        p.at(
            self.at(),
            format!("{} {shown} in {} {problem}", self.key, self.label),
        );
    }

    /// A whole number that follows a shared rule (`crate::rules`), reported in its words.
    pub fn int_rule(&self, p: &mut Problems, rule: impl FnOnce(u64) -> Rule) -> Option<u64> {
        let DeValue::Integer(i) = self.value.get_ref() else {
            self.wrong_type(p, "an integer");
            return None;
        };
        let Ok(n) = u64::from_str_radix(i.as_str(), i.radix()) else {
            self.bad(p, i, "is out of range; expected a positive whole number");
            return None;
        };
        match rule(n) {
            Ok(()) => Some(n),
            Err(problem) => {
                self.bad(p, n, &problem);
                None
            }
        }
    }

    /// A string that follows a shared rule (`crate::rules`), reported in its words.
    pub fn string_rule(
        &self,
        p: &mut Problems,
        rule: impl FnOnce(&str) -> Rule,
    ) -> Option<&'a str> {
        let s = self.string(p)?;
        match rule(s) {
            Ok(()) => Some(s),
            Err(problem) => {
                self.bad(p, format_args!("{s:?}"), &problem);
                None
            }
        }
    }

    pub fn string(&self, p: &mut Problems) -> Option<&'a str> {
        match self.value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.wrong_type(p, "a string");
                None
            }
        }
    }

    /// A string that passes `ok`, or a "{key} {value} in {label} {problem}" report.
    pub fn string_matching(
        &self,
        p: &mut Problems,
        ok: impl Fn(&str) -> bool,
        problem: &str,
    ) -> Option<&'a str> {
        let s = self.string(p)?;
        if ok(s) {
            Some(s)
        } else {
            self.bad(p, format_args!("{s:?}"), problem);
            None
        }
    }

    /// A `sha256:<64 hex>` digest, as API tokens and templates store them.
    pub fn digest(&self, p: &mut Problems) -> Option<[u8; 32]> {
        let s = self.string(p)?;
        let digest = crate::token::parse_digest(s);
        if digest.is_none() {
            self.bad(
                p,
                format_args!("{s:?}"),
                "is not a valid digest; expected \"sha256:\" followed by 64 hex digits",
            );
        }
        digest
    }

    pub fn at_string(&self, p: &mut Problems) -> Option<At<&'a str>> {
        let at = self.at();
        self.string(p).map(|value| At { at, value })
    }

    pub fn bool(&self, p: &mut Problems) -> Option<bool> {
        match self.value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(p, "true or false");
                None
            }
        }
    }

    /// An integer within `range`; the message states the range.
    pub fn int(&self, p: &mut Problems, range: RangeInclusive<i64>) -> Option<i64> {
        let DeValue::Integer(i) = self.value.get_ref() else {
            self.wrong_type(
                p,
                &format!("an integer from {} to {}", range.start(), range.end()),
            );
            return None;
        };
        // The parser keeps the digits and radix; an integer that does not fit i64 is out of
        // range as surely as one that does not fit the field.
        match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.bad(
                    p,
                    i,
                    &format!(
                        "is out of range; expected {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A size in bytes: a string with a unit ("512M") or a plain integer. Zero is refused
    /// because no limit or pool is meaningful at zero bytes.
    pub fn size(&self, p: &mut Problems) -> Option<u64> {
        let bytes = match self.value.get_ref() {
            DeValue::String(s) => match parse_size(s) {
                Ok(n) => n,
                Err(e) => {
                    self.bad(p, format_args!("{:?}", s.as_ref()), &e.to_string());
                    return None;
                }
            },
            DeValue::Integer(i) => match u64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => n,
                Err(_) => {
                    self.bad(p, i, "is out of range; expected a positive number of bytes");
                    return None;
                }
            },
            _ => {
                self.wrong_type(p, "a size such as \"512M\" or a number of bytes");
                return None;
            }
        };
        if bytes == 0 {
            self.bad(
                p,
                self.shown(),
                "must be greater than zero; expected a size such as \"512M\"",
            );
            return None;
        }
        Some(bytes)
    }

    /// The value as written, for messages: strings quoted, numbers bare.
    pub fn shown(&self) -> String {
        match self.value.get_ref() {
            DeValue::String(s) => format!("{:?}", s.as_ref()),
            DeValue::Integer(i) => i.to_string(),
            other => describe(other),
        }
    }

    pub fn table(&self, p: &mut Problems) -> Option<&'a DeTable<'i>> {
        match self.value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(p, "a table");
                None
            }
        }
    }

    pub fn array(&self, p: &mut Problems) -> Option<&'a DeArray<'i>> {
        match self.value.get_ref() {
            DeValue::Array(a) => Some(a),
            _ => {
                self.wrong_type(p, "an array");
                None
            }
        }
    }

    /// `[[key]]` entries (or an inline array of tables), each with the offset of its header.
    /// Elements that are not tables are reported and skipped.
    pub fn tables(&self, p: &mut Problems) -> Vec<(usize, &'a DeTable<'i>)> {
        let DeValue::Array(items) = self.value.get_ref() else {
            self.wrong_type(p, &format!("an array of tables ([[{}]])", self.key));
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| match item.get_ref() {
                DeValue::Table(t) => Some((item.span().start, t)),
                other => {
                    p.at(
                        item.span().start,
                        format!(
                            "each {} in {} must be a table, not {}",
                            self.key,
                            self.label,
                            describe(other)
                        ),
                    );
                    None
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        let lines = LineIndex::new(text);
        let line_col = |offset| lines.line_col(offset);
        assert_eq!(line_col(0), (1, 1));
        assert_eq!(line_col(4), (1, 5));
        assert_eq!(line_col(6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(line_col(12), (2, 6));
        assert_eq!(line_col(999), (3, 1));
    }
}
