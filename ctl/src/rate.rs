//! Rates on the command line, in bits per second: `64000`, `100M` (decimal, as link speeds
//! are: 100 000 000 bit/s), `1.5G`, `100mbit`; read by `model::units::parse_rate`, the rate
//! grammar beside model's size grammar (exact, whole numbers, an error that says what is
//! accepted).

/// Parses a rate; the error names the value and says what is accepted.
pub fn parse(s: &str) -> Result<u64, String> {
    model::units::parse_rate(s).map_err(|e| format!("{s:?} {e}"))
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
        assert_eq!(parse("20mbit"), Ok(20_000_000));
        assert!(
            parse("fast")
                .unwrap_err()
                .contains("does not start with a number")
        );
        assert!(parse("0").unwrap_err().contains("is zero"));
        assert!(parse("-5M").is_err());
        assert!(parse("1.5").unwrap_err().contains("not a whole number"));
        assert!(parse("100MB").unwrap_err().contains("unknown unit \"MB\""));
    }
}
