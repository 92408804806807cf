//! Syntax rules for the names host.toml holds: hostnames, Linux interface names, timezones, and
//! the names of networks, pools, templates, tokens and guests.

/// RFC 1123: labels of letters, digits and hyphens, 1-63 characters, not starting or ending
/// with a hyphen, separated by dots; at most 253 characters in all.
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// What the kernel accepts as an interface name (`dev_valid_name`): 1-15 bytes, not "." or
/// "..", and no '/', ':' or whitespace.
pub fn is_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Longest network name: netd names the network's bridge after it, and Linux interface names
/// stop at 15 bytes.
pub const NETWORK_NAME_MAX: usize = 15;
/// Longest name of a pool, template, token or guest: one DNS label, because guest names become
/// guest hostnames and every name ends up in paths and cgroup names.
pub const NAME_MAX: usize = 63;

/// `[a-z0-9][a-z0-9-]*`, at most `max` characters. Lowercase only, so names that differ only in
/// case cannot collide on case-insensitive tooling.
pub fn is_name(s: &str, max: usize) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(first) if first.is_ascii_lowercase() || first.is_ascii_digit() => {}
        _ => return false,
    }
    s.len() <= max && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// "UTC", or an IANA-looking "Area/Location[/Sub]" such as "Europe/Berlin",
/// "America/Argentina/Buenos_Aires" or "Etc/GMT+5". Whether the zone exists is for the tz
/// database on the host to say; this catches typos like "Europe Berlin" or "+02:00".
pub fn is_timezone(s: &str) -> bool {
    if s == "UTC" {
        return true;
    }
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() >= 2
        && parts[0].starts_with(|c: char| c.is_ascii_uppercase())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        })
}

/// Messages for names that break the rules above; each completes "{key} {value} in {where} ".
pub const HOSTNAME_RULE: &str = "is not a valid hostname; expected letters, digits and \
    hyphens in dot-separated labels of 1-63 characters, not starting or ending with a hyphen";
pub const IFNAME_RULE: &str =
    "is not a valid interface name; expected 1-15 characters without '/', ':' or spaces";
pub const NAME_RULE: &str = "is not a valid name; expected lowercase letters, digits and \
    hyphens, starting with a letter or digit, at most 63 characters";
pub const ABSOLUTE_RULE: &str = "is not an absolute path; expected a path starting with '/'";

/// Paths in host.toml are absolute: daemons run with `/` as working directory, and a relative
/// path would silently mean something else in the sandbox.
pub fn is_absolute(s: &str) -> bool {
    s.starts_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(is_hostname("cairn-dev"));
        assert!(is_hostname("node1.example.com"));
        assert!(is_hostname(&"a".repeat(63)));
        assert!(!is_hostname(&"a".repeat(64)));
        assert!(!is_hostname(""));
        assert!(!is_hostname("-bad"));
        assert!(!is_hostname("bad-"));
        assert!(!is_hostname("under_score"));
        assert!(!is_hostname("a..b"));
        assert!(!is_hostname(&vec!["a".repeat(63); 4].join(".")));
    }

    #[test]
    fn ifnames() {
        assert!(is_ifname("eth0"));
        assert!(is_ifname("enp0s31f6"));
        assert!(is_ifname("bond0.100"));
        assert!(!is_ifname(""));
        assert!(!is_ifname("a-very-long-ifname"));
        assert!(!is_ifname("eth0:1"));
        assert!(!is_ifname("eth 0"));
        assert!(!is_ifname("a/b"));
        assert!(!is_ifname(".."));
    }

    #[test]
    fn names() {
        assert!(is_name("lan", NETWORK_NAME_MAX));
        assert!(is_name("10g-uplink", NETWORK_NAME_MAX));
        assert!(!is_name("LAN", NETWORK_NAME_MAX));
        assert!(!is_name("-lan", NETWORK_NAME_MAX));
        assert!(!is_name("lan_1", NETWORK_NAME_MAX));
        assert!(!is_name("sixteen-chars-xx", NETWORK_NAME_MAX));
        assert!(is_name("sixteen-chars-xx", NAME_MAX));
        assert!(!is_name("", NAME_MAX));
    }

    #[test]
    fn timezones() {
        assert!(is_timezone("UTC"));
        assert!(is_timezone("Europe/Berlin"));
        assert!(is_timezone("America/Argentina/Buenos_Aires"));
        assert!(is_timezone("Etc/GMT+5"));
        assert!(is_timezone("America/Port-au-Prince"));
        assert!(!is_timezone("utc"));
        assert!(!is_timezone("Berlin"));
        assert!(!is_timezone("Europe Berlin"));
        assert!(!is_timezone("europe/berlin"));
        assert!(!is_timezone("Europe/"));
        assert!(!is_timezone("+02:00"));
    }
}
