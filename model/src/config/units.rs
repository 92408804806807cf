//! Sizes as host.toml writes them: a plain number of bytes or a whole number with a binary unit
//! ("512M", "20G", "4GiB"). Units are 1024-based because memory and disk limits are set in
//! pages and sectors, where a decimal "G" would silently be 7% short.

/// What is wrong with a size string. Each message completes a sentence that starts with the
/// field and the value, e.g. `memory "12X" in vm "a" ` + message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("is empty; expected a size such as \"512M\"")]
    Empty,
    #[error("does not start with a number; expected a size such as \"512M\" or \"20G\"")]
    NoNumber,
    #[error("is not a whole number; expected an integer with a unit, e.g. \"1536M\" for 1.5G")]
    Fraction,
    #[error(
        "has an unknown unit \"{0}\"; expected K, M, G or T (1024-based, KiB-style spellings \
         also accepted) or a plain number of bytes"
    )]
    UnknownUnit(String),
    #[error("is too large; expected at most 16 exabytes")]
    TooLarge,
}

/// The multiplier for each accepted unit suffix. Both spellings are accepted because both are
/// common in the tools operators copy values from (qemu "-m 512M", lsblk "20GiB").
const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("K", 1 << 10),
    ("KiB", 1 << 10),
    ("M", 1 << 20),
    ("MiB", 1 << 20),
    ("G", 1 << 30),
    ("GiB", 1 << 30),
    ("T", 1 << 40),
    ("TiB", 1 << 40),
];

/// Parses a size string into bytes. Whitespace between the number and the unit is allowed.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, rest) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(SizeError::NoNumber);
    }
    if rest.starts_with(['.', ',']) {
        return Err(SizeError::Fraction);
    }
    let unit = rest.trim_start();
    let multiplier = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, m)| *m)
        .ok_or_else(|| SizeError::UnknownUnit(unit.to_string()))?;
    // Only digits are left in `number`, so the parse can fail only by overflowing.
    let number: u64 = number.parse().map_err(|_| SizeError::TooLarge)?;
    number.checked_mul(multiplier).ok_or(SizeError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_and_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("100K"), Ok(100 * 1024));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("2 MiB"), Ok(2 << 20));
        assert_eq!(parse_size(" 1K "), Ok(1024));
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("G"), Err(SizeError::NoNumber));
        assert_eq!(parse_size("-1G"), Err(SizeError::NoNumber));
        assert_eq!(parse_size("1.5G"), Err(SizeError::Fraction));
        assert_eq!(parse_size("12X"), Err(SizeError::UnknownUnit("X".into())));
        assert_eq!(parse_size("12g"), Err(SizeError::UnknownUnit("g".into())));
        assert_eq!(parse_size("12GB"), Err(SizeError::UnknownUnit("GB".into())));
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::TooLarge));
        assert_eq!(parse_size("16777216T"), Err(SizeError::TooLarge));
    }

    #[test]
    fn messages_name_the_unit() {
        let msg = SizeError::UnknownUnit("X".into()).to_string();
        assert!(msg.starts_with("has an unknown unit \"X\"; expected K, M, G or T"));
    }
}
