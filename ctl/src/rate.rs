//! Rates on the command line: `100M`, `1.5G`, `64000`, in bits per second.

/// Parses a rate with an optional K/M/G suffix (decimal multiples, as link speeds are given).
pub fn parse(s: &str) -> Result<u64, String> {
    let (number, factor) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        Some((i, 'g' | 'G')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a rate: use bit/s like 64000, 100M or 1.5G"))?;
    let bps = value * factor;
    if !bps.is_finite() || bps < 1.0 || bps > u64::MAX as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(bps.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn suffixes_are_decimal() {
        assert_eq!(parse("100M"), Ok(100_000_000));
        assert_eq!(parse("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse("64000"), Ok(64_000));
        assert_eq!(parse("20m"), Ok(20_000_000));
        assert!(parse("fast").unwrap_err().contains("not a rate"));
        assert!(parse("0").is_err());
        assert!(parse("-5M").is_err());
    }
}
