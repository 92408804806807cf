//! Sizes on the command line: `512M`, `2G`, `1048576`, in bytes.

/// Parses a size with an optional K/M/G/T suffix (binary multiples, as memory is sized:
/// 512M = 512 MiB), optionally followed by `i`/`iB`/`B`.
pub fn parse(s: &str) -> Result<u64, String> {
    let trimmed = s
        .strip_suffix("iB")
        .or_else(|| s.strip_suffix('i'))
        .or_else(|| s.strip_suffix('B'))
        .unwrap_or(s);
    let (number, shift) = match trimmed.char_indices().last() {
        Some((i, 'k' | 'K')) => (&trimmed[..i], 10),
        Some((i, 'm' | 'M')) => (&trimmed[..i], 20),
        Some((i, 'g' | 'G')) => (&trimmed[..i], 30),
        Some((i, 't' | 'T')) => (&trimmed[..i], 40),
        _ => (trimmed, 0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size: use bytes like 1048576, 512M or 2G"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bytes.round() as u64)
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

    #[test]
    fn suffixes_are_binary() {
        assert_eq!(parse("512M"), Ok(512 << 20));
        assert_eq!(parse("512MiB"), Ok(512 << 20));
        assert_eq!(parse("1.5G"), Ok(3 << 29));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("0"), Ok(0));
        assert!(parse("lots").unwrap_err().contains("not a size"));
        assert!(parse("-1M").is_err());
        assert_eq!(human(512 << 20), "512.0M");
        assert_eq!(human(100), "100");
    }
}
