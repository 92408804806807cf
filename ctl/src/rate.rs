//! Rates on the command line, in bits per second: `64000`, `100M` (decimal, as link speeds
//! are: 100 000 000 bit/s), `1.5G`, `100mbit`; read by `model::units::parse_rate`, the rate
//! grammar beside model's size grammar (exact, whole numbers, an error that says what is
//! accepted).

/// Parses a rate; the error names the value and says what is accepted.
pub fn parse(s: &str) -> Result<u64, String> {
    model::units::parse_rate(s).map_err(|e| format!("{s:?} {e}"))
}

/// A rate for people, in the units `parse` reads: `20M`, `1.5G`, `64K`, `900`.
pub fn human(bps: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("T", 1_000_000_000_000),
        ("G", 1_000_000_000),
        ("M", 1_000_000),
        ("K", 1_000),
    ];
    for (unit, scale) in UNITS {
        if bps >= scale {
            if bps.is_multiple_of(scale) {
                return format!("{}{unit}", bps / scale);
            }
            let value = format!("{:.3}", bps as f64 / scale as f64);
            return format!(
                "{}{unit}",
                value.trim_end_matches('0').trim_end_matches('.')
            );
        }
    }
    bps.to_string()
}

#[cfg(test)]
mod tests {
    use super::{human, parse};

    #[test]
    fn human_rates_read_back() {
        for (bps, text) in [
            (20_000_000, "20M"),
            (1_500_000_000, "1.5G"),
            (64_000, "64K"),
            (900, "900"),
            (2_000_000_000_000, "2T"),
        ] {
            assert_eq!(human(bps), text);
            assert_eq!(parse(text), Ok(bps));
        }
    }

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
