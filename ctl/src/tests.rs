//! The command line as a whole: every command and argument explained, global options apart,
//! the same positional NAME for every kind.

use clap::CommandFactory as _;

use crate::Cli;

/// Every subcommand and every argument says what it is in `--help` (and so in the man pages
/// and completions made from the same definitions).
#[test]
fn every_command_and_argument_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} <{id}>"));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = sub.get_name();
            if name == "help" {
                continue;
            }
            let sub_path = format!("{path} {name}");
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(sub_path.clone());
            }
            walk(sub, &sub_path, missing);
        }
    }
    let mut missing = Vec::new();
    walk(&Cli::command(), "cairnctl", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:#?}");
}

/// The options of every command (--url, --remote, --json, ...) are listed under one heading.
#[test]
fn global_options_are_grouped() {
    let cmd = Cli::command();
    let globals: Vec<_> = cmd.get_arguments().filter(|a| a.is_global_set()).collect();
    assert!(globals.len() >= 7, "{}", globals.len());
    for a in globals {
        assert_eq!(
            a.get_help_heading(),
            Some("Global options"),
            "{}",
            a.get_id()
        );
    }
}

/// Every `create` takes the new thing's name first, as a positional argument: no `--name`.
#[test]
fn create_takes_a_positional_name() {
    let cmd = Cli::command();
    for kind in cmd.get_subcommands() {
        for sub in kind.get_subcommands().filter(|s| s.get_name() == "create") {
            let first = sub.get_positionals().next();
            assert!(
                first.is_some(),
                "{} create has no positional",
                kind.get_name()
            );
            assert!(
                sub.get_arguments().all(|a| a.get_long() != Some("name")),
                "{} create takes --name",
                kind.get_name()
            );
        }
    }
    for args in [
        &[
            "cairnctl", "vm", "create", "deb", "--memory", "1G", "--kernel", "/k",
        ][..],
        &["cairnctl", "ct", "create", "web1", "--template", "busybox"],
        &["cairnctl", "net", "create", "lan", "--kind", "bridged"],
        &["cairnctl", "pool", "create", "fast"],
        &["cairnctl", "volume", "create", "fast/v", "--size", "1G"],
        &[
            "cairnctl",
            "export",
            "create",
            "fast/v",
            "lun1",
            "--initiator",
            "iqn.x:y",
        ],
        &["cairnctl", "remote", "add", "lab", "https://h:8443"],
    ] {
        if let Err(e) = <Cli as clap::Parser>::try_parse_from(args) {
            panic!("{args:?}: {e}");
        }
    }
}
