//! Golden tests for host.toml: every `examples/*.toml` must be valid, and every
//! `tests/bad/NAME.toml` must fail with exactly the diagnostics in `tests/bad/NAME.expected`.
//!
//! After a deliberate change to the messages, `CAIRN_BLESS=1 cargo test -p model --test golden`
//! rewrites the `.expected` files; review the diff before keeping it.

use std::fs;
use std::path::{Path, PathBuf};

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn examples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let files = toml_files(&dir);
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    let mut failures = Vec::new();
    for path in &files {
        let text = fs::read_to_string(path).expect("readable example");
        if let Err(errors) = model::config::parse(&file_name(path), &text) {
            failures.push(errors.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "invalid examples:\n{}",
        failures.join("\n")
    );
}

#[test]
fn bad_files_report_exactly_the_expected_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let files = toml_files(&dir);
    assert!(
        files.len() >= 10,
        "expected at least 10 bad files in {}",
        dir.display()
    );
    let bless = std::env::var_os("CAIRN_BLESS").is_some();
    let mut failures = Vec::new();
    for path in &files {
        let text = fs::read_to_string(path).expect("readable bad file");
        let actual = match model::config::parse(&file_name(path), &text) {
            Ok(_) => {
                failures.push(format!("{}: parsed without errors", path.display()));
                continue;
            }
            Err(errors) => format!("{errors}\n"),
        };
        let expected_path = path.with_extension("expected");
        if bless {
            fs::write(&expected_path, &actual).expect("writable .expected file");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dev_example_is_the_appliance_config() {
    use model::config::{MgmtAddress, NetworkKind, Tls};

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dev.toml");
    let config = model::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.host.hostname, "cairn-dev");
    assert_eq!(config.host.timezone, "UTC");
    assert_eq!(
        config.host.dns,
        vec!["10.0.2.3".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(config.host.management.interface, "eth0");
    assert_eq!(config.host.management.address, MgmtAddress::Dhcp);
    assert_eq!(config.api.listen.to_string(), "0.0.0.0");
    assert_eq!(config.api.port, 8443);
    assert_eq!(config.api.tls, Tls::Generate);
    assert_eq!(config.api.tokens.len(), 1);
    assert_eq!(config.api.tokens[0].name, "admin");
    assert!(model::token::matches(
        "cairn-dev-token",
        &config.api.tokens[0].sha256
    ));
    assert_eq!(config.networks.len(), 1);
    let lan = &config.networks[0];
    assert_eq!(lan.name, "lan");
    assert_eq!(lan.kind, NetworkKind::Bridged);
    assert_eq!(
        lan.subnet.map(|c| c.to_string()).as_deref(),
        Some("10.10.0.0/24")
    );
    assert_eq!(
        lan.address.map(|c| c.to_string()).as_deref(),
        Some("10.10.0.1/24")
    );
}
