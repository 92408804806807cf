//! `--json` on commands that answer locally: the same facts as the text, as records.

use std::process::Command;

#[test]
fn config_check_json() {
    let dir = std::env::temp_dir().join(format!("cairnctl-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("host.toml");
    std::fs::write(&file, "[host]\nhostname = 42\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(["--json", "config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = file.display().to_string();
    assert_eq!(json["file"], path.as_str());
    assert_eq!(json["ok"], false);
    let errors = json["errors"].as_array().unwrap();
    assert!(!errors.is_empty());
    for e in errors {
        // Each as the text form prints it: file:line:col: message.
        let e = e.as_str().unwrap();
        assert!(e.starts_with(&format!("{path}:")), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completion_scripts_and_man_pages() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("complete -F _cairnctl"), "{script}");
    let out = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(["completion", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown shell");
}
