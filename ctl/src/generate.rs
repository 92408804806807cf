//! `cairnctl completion SHELL` and `cairnctl man DIR`: shell completions and man pages made
//! from the same clap definitions as the parser, so they never disagree with it.

use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::Cli;

/// The completion script for `shell` on stdout (e.g. `cairnctl completion bash >
/// /etc/bash_completion.d/cairnctl`).
pub fn completion(shell: Shell) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "cairnctl", &mut std::io::stdout());
}

/// Man pages into `dir`: cairnctl.1 and one page per subcommand (cairnctl-vm-create.1, as
/// git names its pages). Returns how many were written.
pub fn man(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = 0;
    page(&cmd, "cairnctl", dir, &mut written)?;
    Ok(written)
}

fn page(cmd: &clap::Command, name: &str, dir: &Path, written: &mut usize) -> anyhow::Result<()> {
    // clap takes &'static names (its `string` feature would cost every build); this runs once
    // per page in a process that then ends.
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    let cmd = cmd.clone().name(name);
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .with_context(|| format!("rendering {name}"))?;
    let file = dir.join(format!("{name}.1"));
    std::fs::write(&file, out).with_context(|| format!("writing {}", file.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_for_every_command() {
        let dir = std::env::temp_dir().join(format!("cairnctl-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let n = man(&dir).unwrap();
        assert!(n > 50, "{n} pages");
        let page = std::fs::read_to_string(dir.join("cairnctl-vm-create.1")).unwrap();
        assert!(page.contains(".TH cairnctl-vm-create 1"), "{page}");
        assert!(page.contains("unique among the host"), "{page}");
        assert!(
            page.contains("accept\\-fingerprint"),
            "global options are on every page"
        );
        let top = std::fs::read_to_string(dir.join("cairnctl.1")).unwrap();
        assert!(top.contains("remote"), "{top}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cairnctl", &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["remote", "accept-fingerprint", "poweroff", "snapshot"] {
                assert!(text.contains(word), "{shell:?} lacks {word}");
            }
        }
    }
}
