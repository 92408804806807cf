//! Quantities with units, one grammar each wherever they are written: host.toml, cairnctl's
//! flags, and anything else that reads them.
//!
//! Sizes (bytes), as Incus and Kubernetes users write them:
//! - a plain number is bytes: `4096`;
//! - `K`, `M`, `G`, `T` and `KiB`, `MiB`, `GiB`, `TiB` (also Kubernetes' `Ki`, `Mi`, `Gi`, `Ti`)
//!   are binary, 1024ⁿ: `512M` = `512MiB` = 536 870 912;
//! - `kB`, `MB`, `GB`, `TB` are decimal, 1000ⁿ: `256MB` = 256 000 000;
//! - the single letters are also accepted in lower case, as binary: `512m` = `512M`;
//! - a decimal fraction is accepted when the result is a whole number of bytes: `1.5G`;
//! - `B` after a plain number means bytes; a space between number and unit is allowed.
//!
//! Rates (bits per second) are decimal, as link speeds are: a plain number is bit/s, and `K`,
//! `M`, `G`, `T` (any case, optionally followed by `bit` as tc writes them) are 1000ⁿ:
//! `100M` = `100mbit` = 100 000 000 bit/s. Fractions as for sizes: `1.5G`.
//!
//! Both are computed exactly in integers: no value is rounded, and anything not understood is
//! an error that says what is accepted.

/// What is accepted as a size, for messages.
pub const SIZE_GRAMMAR: &str = "a number of bytes, optionally with a unit: K, M, G, T or KiB, \
    MiB, GiB, TiB (1024-based; k, m, g, t too), or kB, MB, GB, TB (1000-based); e.g. \"512M\", \
    \"1.5G\", \"256MB\"";

/// What is accepted as a rate, for messages.
pub const RATE_GRAMMAR: &str = "a number of bits per second, optionally with a 1000-based unit \
    K, M, G or T (any case, optionally followed by \"bit\"); e.g. \"64000\", \"100M\", \"1.5G\"";

/// What is wrong with a size string. Each message completes a sentence that starts with the
/// field and the value, e.g. `memory "12X" in vm "a" ` + message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("is empty; expected {SIZE_GRAMMAR}")]
    Empty,
    #[error("does not start with a number; expected {SIZE_GRAMMAR}")]
    NoNumber,
    #[error("is not a whole number of bytes; expected {SIZE_GRAMMAR}")]
    Fraction,
    #[error("has an unknown unit {0:?}; expected {SIZE_GRAMMAR}")]
    UnknownUnit(String),
    #[error("is too large; expected at most 16 EiB (18446744073709551615 bytes)")]
    TooLarge,
}

/// What is wrong with a rate string; messages complete a sentence as [`SizeError`]'s do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("is empty; expected {RATE_GRAMMAR}")]
    Empty,
    #[error("does not start with a number; expected {RATE_GRAMMAR}")]
    NoNumber,
    #[error("is not a whole number of bits per second; expected {RATE_GRAMMAR}")]
    Fraction,
    #[error("has an unknown unit {0:?}; expected {RATE_GRAMMAR}")]
    UnknownUnit(String),
    #[error("is too large; expected at most 18446744073709551615 bit/s")]
    TooLarge,
    #[error("is zero; expected at least 1 bit/s")]
    Zero,
}

const KI: u64 = 1 << 10;
const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const TI: u64 = 1 << 40;
const K: u64 = 1_000;
const M: u64 = 1_000_000;
const G: u64 = 1_000_000_000;
const T: u64 = 1_000_000_000_000;

/// Size units, matched exactly (case matters beyond the single letters: "mb" could as well be
/// millibits, and refusing it beats guessing).
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("K", KI),
    ("k", KI),
    ("Ki", KI),
    ("KiB", KI),
    ("M", MI),
    ("m", MI),
    ("Mi", MI),
    ("MiB", MI),
    ("G", GI),
    ("g", GI),
    ("Gi", GI),
    ("GiB", GI),
    ("T", TI),
    ("t", TI),
    ("Ti", TI),
    ("TiB", TI),
    ("kB", K),
    ("KB", K),
    ("MB", M),
    ("GB", G),
    ("TB", T),
];

/// Parses a size into bytes; see the module documentation for the grammar.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let unit = |u: &str| {
        SIZE_UNITS
            .iter()
            .find(|(name, _)| *name == u)
            .map(|(_, m)| *m)
    };
    parse_quantity(s, unit).map_err(|e| match e {
        Quantity::Empty => SizeError::Empty,
        Quantity::NoNumber => SizeError::NoNumber,
        Quantity::Fraction => SizeError::Fraction,
        Quantity::UnknownUnit(u) => SizeError::UnknownUnit(u),
        Quantity::TooLarge => SizeError::TooLarge,
    })
}

/// Parses a rate into bits per second (at least 1); see the module documentation.
pub fn parse_rate(s: &str) -> Result<u64, RateError> {
    let unit = |u: &str| {
        let lower = u.to_ascii_lowercase();
        let letter = lower.strip_suffix("bit").unwrap_or(&lower);
        match letter {
            "" => Some(1),
            "k" => Some(K),
            "m" => Some(M),
            "g" => Some(G),
            "t" => Some(T),
            _ => None,
        }
    };
    match parse_quantity(s, unit) {
        Ok(0) => Err(RateError::Zero),
        Ok(n) => Ok(n),
        Err(e) => Err(match e {
            Quantity::Empty => RateError::Empty,
            Quantity::NoNumber => RateError::NoNumber,
            Quantity::Fraction => RateError::Fraction,
            Quantity::UnknownUnit(u) => RateError::UnknownUnit(u),
            Quantity::TooLarge => RateError::TooLarge,
        }),
    }
}

/// What the shared number reader found wrong, before it is worded for sizes or rates.
enum Quantity {
    Empty,
    NoNumber,
    Fraction,
    UnknownUnit(String),
    TooLarge,
}

/// Fraction digits read exactly: 10^18 times any multiplier here fits in u128. A fraction
/// that needs more digits to be whole is refused as not whole.
const MAX_FRACTION_DIGITS: usize = 18;

/// `digits[.digits][ ]unit`, the unit looked up with `unit`, computed exactly.
fn parse_quantity(s: &str, unit: impl Fn(&str) -> Option<u64>) -> Result<u64, Quantity> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Quantity::Empty);
    }
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int, rest) = s.split_at(int_end);
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let end = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let (frac, rest) = after.split_at(end);
            // "5." is not a number anyone means.
            if frac.is_empty() {
                return Err(Quantity::NoNumber);
            }
            (frac, rest)
        }
        None => ("", rest),
    };
    // "-1G", "G" and ".5" do not start with a number.
    if int.is_empty() {
        return Err(Quantity::NoNumber);
    }
    let unit_name = rest.trim_start();
    let multiplier = unit(unit_name).ok_or_else(|| Quantity::UnknownUnit(unit_name.to_string()))?;
    // Only digits, so parsing can fail only by overflowing.
    let int: u128 = int.parse().map_err(|_| Quantity::TooLarge)?;
    let frac = frac.trim_end_matches('0');
    if frac.len() > MAX_FRACTION_DIGITS {
        return Err(Quantity::Fraction);
    }
    let scale = 10u128.pow(frac.len() as u32);
    // Empty after trimming zeros means no fraction at all.
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| Quantity::Fraction)?
    };
    let frac_scaled = frac * u128::from(multiplier);
    if !frac_scaled.is_multiple_of(scale) {
        return Err(Quantity::Fraction);
    }
    int.checked_mul(u128::from(multiplier))
        .and_then(|n| n.checked_add(frac_scaled / scale))
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(Quantity::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size(" 1K "), Ok(1024));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn letters_and_iec_units_are_binary() {
        assert_eq!(parse_size("100K"), Ok(100 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("20g"), Ok(20 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(parse_size("8k"), Ok(8 << 10));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4Gi"), Ok(4 << 30));
        assert_eq!(parse_size("2 MiB"), Ok(2 << 20));
        assert_eq!(parse_size("3KiB"), Ok(3 << 10));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
    }

    #[test]
    fn si_units_are_decimal() {
        assert_eq!(parse_size("256MB"), Ok(256_000_000));
        assert_eq!(parse_size("12GB"), Ok(12_000_000_000));
        assert_eq!(parse_size("4kB"), Ok(4_000));
        assert_eq!(parse_size("4KB"), Ok(4_000));
        assert_eq!(parse_size("2TB"), Ok(2_000_000_000_000));
    }

    #[test]
    fn fractions_must_come_to_whole_bytes() {
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("2.000"), Ok(2));
        assert_eq!(parse_size("1.25M"), Ok(1_310_720));
        assert_eq!(parse_size("1.1K"), Err(SizeError::Fraction));
        assert_eq!(parse_size("1.5"), Err(SizeError::Fraction));
        assert_eq!(parse_size("0.0001kB"), Err(SizeError::Fraction));
        assert_eq!(
            parse_size("1.0000000000000000001G"),
            Err(SizeError::Fraction)
        );
    }

    #[test]
    fn anything_else_is_an_error() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("  "), Err(SizeError::Empty));
        assert_eq!(parse_size("G"), Err(SizeError::NoNumber));
        assert_eq!(parse_size("-1G"), Err(SizeError::NoNumber));
        assert_eq!(parse_size("+1G"), Err(SizeError::NoNumber));
        assert_eq!(parse_size(".5G"), Err(SizeError::NoNumber));
        assert_eq!(parse_size("5.G"), Err(SizeError::NoNumber));
        assert_eq!(
            parse_size("12 XB"),
            Err(SizeError::UnknownUnit("XB".into()))
        );
        assert_eq!(parse_size("12X"), Err(SizeError::UnknownUnit("X".into())));
        assert_eq!(parse_size("12mb"), Err(SizeError::UnknownUnit("mb".into())));
        assert_eq!(parse_size("12b"), Err(SizeError::UnknownUnit("b".into())));
        assert_eq!(parse_size("1e9"), Err(SizeError::UnknownUnit("e9".into())));
        assert_eq!(
            parse_size("1,5G"),
            Err(SizeError::UnknownUnit(",5G".into()))
        );
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("16777216T"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("18446744073709551616"), Err(SizeError::TooLarge));
    }

    #[test]
    fn messages_say_what_is_accepted() {
        let msg = SizeError::UnknownUnit("XB".into()).to_string();
        assert!(msg.starts_with("has an unknown unit \"XB\"; expected a number of bytes"));
        assert!(msg.contains("KiB, MiB, GiB, TiB (1024-based"), "{msg}");
        assert!(msg.contains("kB, MB, GB, TB (1000-based)"), "{msg}");
        assert!(SizeError::Empty.to_string().contains("e.g. \"512M\""));
    }

    #[test]
    fn rates_are_decimal() {
        assert_eq!(parse_rate("100M"), Ok(100_000_000));
        assert_eq!(parse_rate("100m"), Ok(100_000_000));
        assert_eq!(parse_rate("100mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert_eq!(parse_rate("8k"), Ok(8_000));
        assert_eq!(parse_rate("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_rate("0"), Err(RateError::Zero));
        assert_eq!(parse_rate("-5M"), Err(RateError::NoNumber));
        assert_eq!(parse_rate("fast"), Err(RateError::NoNumber));
        assert_eq!(parse_rate("1.5"), Err(RateError::Fraction));
        assert_eq!(
            parse_rate("100MB"),
            Err(RateError::UnknownUnit("MB".into()))
        );
        assert_eq!(
            parse_rate("100Mi"),
            Err(RateError::UnknownUnit("Mi".into()))
        );
        assert_eq!(parse_rate("99999999999T"), Err(RateError::TooLarge));
    }
}
