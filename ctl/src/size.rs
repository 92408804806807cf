//! Sizes on the command line, in bytes, read by the same function host.toml validation uses
//! (`model::units::parse_size`): `4096`, `512M` = `512MiB` = `512m` (1024-based), `256MB`
//! (1000-based), `1.5G`.

/// Parses a size as host.toml does; the error names the value and says what is accepted.
pub fn parse(s: &str) -> Result<u64, String> {
    model::units::parse_size(s).map_err(|e| format!("{s:?} {e}"))
}

/// Bytes for people: `512.0M`, `1.5G`; below 1 KiB as a plain number.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::{human, parse};

    /// One grammar: every string reads as model's parser reads it, errors included.
    #[test]
    fn the_same_grammar_as_host_toml() {
        for s in [
            "4096",
            "512M",
            "512m",
            "512MiB",
            "512Mi",
            "1.5G",
            "12GB",
            "256MB",
            "4kB",
            "1T",
            "0",
            "",
            "lots",
            "-1G",
            "12 XB",
            "1.1K",
            "99999999999T",
            "12mb",
        ] {
            assert_eq!(
                parse(s),
                model::units::parse_size(s).map_err(|e| format!("{s:?} {e}")),
                "{s:?}"
            );
        }
        assert_eq!(parse("512MB"), Ok(512_000_000));
        assert_eq!(parse("512m"), Ok(512 << 20));
        assert_eq!(parse("1.5G"), Ok(3 << 29));
        assert_eq!(parse("12GB"), Ok(12_000_000_000));
        let e = parse("12 XB").unwrap_err();
        assert!(
            e.starts_with("\"12 XB\" has an unknown unit \"XB\"; expected"),
            "{e}"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512 << 20), "512.0M");
        assert_eq!(human(100), "100");
    }
}
