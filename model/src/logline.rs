//! The daemons' log lines as init keeps them for `host.log`: each line's level, read from the
//! format `daemon::init_logging` writes (tracing's fmt without colours:
//! `2026-12-04T05:44:49.123456Z  INFO target: message key=value`).

use std::fmt;

/// A log line's level, ordered from the chattiest to the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// `trace`, `debug`, `info`, `warn` (or `warning`), `error`, in any case.
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "trace" => Some(Level::Trace),
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A line's level and the text after it. A tracing line loses its timestamp (the ring keeps
/// its own time) and level; any other line (a panic, a `println!`) is kept whole, at `info`,
/// or at `error` when it is a Rust panic's first line.
pub fn split(line: &str) -> (Level, &str) {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    let mut words = trimmed.splitn(2, ' ');
    if let (Some(stamp), Some(rest)) = (words.next(), words.next())
        && looks_like_timestamp(stamp)
    {
        let rest = rest.trim_start();
        let (word, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if word.chars().all(|c| c.is_ascii_uppercase())
            && let Some(level) = Level::parse(word)
        {
            return (level, text.trim_start());
        }
    }
    if trimmed.starts_with("thread '") && trimmed.contains("panicked at") {
        return (Level::Error, trimmed);
    }
    (Level::Info, trimmed)
}

/// `2026-12-04T05:44:49.123456Z`: digits, then `-`, a `T` and a `Z` or offset; enough to tell
/// tracing's lines from others without a date parser.
fn looks_like_timestamp(word: &str) -> bool {
    word.len() >= 20
        && word.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && word.as_bytes()[4] == b'-'
        && word.as_bytes().get(10) == Some(&b'T')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_lines_give_their_level_and_message() {
        assert_eq!(
            split("2026-12-04T05:44:49.123456Z  INFO hostd: hostd ready state=/s\n"),
            (Level::Info, "hostd: hostd ready state=/s")
        );
        assert_eq!(
            split("2026-12-04T05:44:49.123456Z  WARN netd::net: link gone"),
            (Level::Warn, "netd::net: link gone")
        );
        assert_eq!(
            split("2026-12-04T05:44:49.123456Z ERROR apid: boom"),
            (Level::Error, "apid: boom")
        );
        assert_eq!(
            split("2026-12-04T05:44:49.123456Z DEBUG zbus: x"),
            (Level::Debug, "zbus: x")
        );
        assert_eq!(
            split("2026-12-04T05:44:49.123456Z TRACE a: b"),
            (Level::Trace, "a: b")
        );
    }

    #[test]
    fn other_lines_are_kept_whole() {
        assert_eq!(split("cairn: api ready"), (Level::Info, "cairn: api ready"));
        assert_eq!(
            split("thread 'main' panicked at hostd/src/x.rs:1:2:"),
            (
                Level::Error,
                "thread 'main' panicked at hostd/src/x.rs:1:2:"
            )
        );
        // A timestamp-like word followed by no level word is no tracing line.
        assert_eq!(split("2026-12-04T05:44:49Z hello there").0, Level::Info);
        assert_eq!(split("").1, "");
    }

    #[test]
    fn levels_order_and_parse() {
        assert!(Level::Trace < Level::Debug && Level::Warn < Level::Error);
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
        for l in Level::ALL {
            assert_eq!(Level::parse(l.as_str()), Some(l));
        }
    }
}
