//! Templates the appliance image carries itself (`image build --debug-shell` bundles a busybox
//! rootfs): `DIR/NAME.tar` with its digest in `DIR/NAME.tar.sha256`. host.toml's `[[template]]`
//! and `template.import` name one as `bundled:NAME`, so a config need not repeat a digest that
//! changes with every build; the digest beside the tarball is checked as any other.

/// Where the image keeps its bundled templates.
pub const BUNDLED_TEMPLATES_DIR: &str = "/usr/lib/cairn/templates";
/// What a template source naming a bundled template starts with.
pub const BUNDLED_SCHEME: &str = "bundled:";

/// The name in `bundled:NAME`, or `None` when `source` does not use the scheme. The name is
/// returned as written: [`is_bundled_name`] says whether it is a valid one.
pub fn bundled_name(source: &str) -> Option<&str> {
    source.strip_prefix(BUNDLED_SCHEME)
}

/// A bundled template's name becomes a file name in [`BUNDLED_TEMPLATES_DIR`]: the template
/// names' rule (lowercase letters, digits, hyphens) keeps it inside that directory.
pub fn is_bundled_name(name: &str) -> bool {
    super::is_ct_name(name)
}

/// The tarball of bundled template `name` and the file holding its digest, under `dir`.
pub fn bundled_files(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        dir.join(format!("{name}.tar")),
        dir.join(format!("{name}.tar.sha256")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_scheme_and_stay_file_names() {
        assert_eq!(bundled_name("bundled:busybox"), Some("busybox"));
        assert_eq!(bundled_name("/srv/busybox.tar"), None);
        assert!(is_bundled_name("busybox"));
        for bad in ["", "../etc", "Busybox", "a/b", "-x"] {
            assert!(!is_bundled_name(bad), "{bad}");
        }
        let (tar, sum) = bundled_files(std::path::Path::new(BUNDLED_TEMPLATES_DIR), "busybox");
        assert_eq!(
            tar,
            std::path::Path::new("/usr/lib/cairn/templates/busybox.tar")
        );
        assert_eq!(
            sum,
            std::path::Path::new("/usr/lib/cairn/templates/busybox.tar.sha256")
        );
    }
}
