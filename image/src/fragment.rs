//! `image check-fragment`: buildroot-config's kernel fragment against what this image uses —
//! every option it lists must be set in the Debian kernel config `image` builds from, and every
//! module `image` loads (at boot or on demand) must be marked `# module: NAME` on one of them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::modules::{ON_DEMAND, WANTED};

/// The fragment, relative to the workspace.
pub const PATH: &str = "buildroot-config/board/cairn/linux.fragment";

/// (option, value, module it builds) of each `CONFIG_…=…` line.
pub fn parse(text: &str) -> Result<Vec<(String, String, Option<String>)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (setting, comment) = match line.split_once('#') {
            Some((s, c)) => (s.trim(), Some(c.trim())),
            None => (line, None),
        };
        let Some((option, value)) = setting.split_once('=') else {
            bail!("{PATH}:{}: not OPTION=value: {line:?}", i + 1);
        };
        if !option.starts_with("CONFIG_") || !["y", "m"].contains(&value) {
            bail!("{PATH}:{}: want CONFIG_…=y or =m: {line:?}", i + 1);
        }
        let module = match comment {
            Some(c) => match c.strip_prefix("module:") {
                Some(m) => Some(m.trim().to_string()),
                None => bail!(
                    "{PATH}:{}: a comment after an option is `# module: NAME`",
                    i + 1
                ),
            },
            None => None,
        };
        out.push((option.to_string(), value.to_string(), module));
    }
    Ok(out)
}

/// What does not hold, one line each (empty when all is well).
pub fn problems(
    fragment: &[(String, String, Option<String>)],
    kernel_config: &str,
    modules: &[&str],
) -> Vec<String> {
    let set: BTreeMap<&str, &str> = kernel_config
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .collect();
    let mut out = Vec::new();
    for (option, _, _) in fragment {
        match set.get(option.as_str()) {
            Some(&"y") | Some(&"m") => {}
            other => out.push(format!(
                "{option} is {} in the Debian kernel config",
                other.map_or("not set".to_string(), |v| format!("={v}"))
            )),
        }
    }
    for m in modules {
        if !fragment
            .iter()
            .any(|(_, _, built)| built.as_deref() == Some(m))
        {
            out.push(format!(
                "module {m} (image loads it) is marked on no option"
            ));
        }
    }
    out
}

/// Every module name `image` asks for: the boot list and the on-demand groups.
pub fn loaded_modules() -> Vec<&'static str> {
    let mut all: Vec<&str> = WANTED.to_vec();
    for (_, group) in ON_DEMAND {
        all.extend_from_slice(group);
    }
    all
}

pub fn check(workspace: &Path) -> Result<()> {
    let path = workspace.join(PATH);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let fragment = parse(&text)?;
    let kernel = crate::kernel::fetch()?;
    let config_path = kernel
        .vmlinuz
        .parent()
        .map(|d| d.join(format!("config-{}", kernel.release)))
        .context("no directory above vmlinuz")?;
    let config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let modules = loaded_modules();
    let problems = problems(&fragment, &config, &modules);
    if !problems.is_empty() {
        bail!(
            "{PATH} against {}:\n{}",
            config_path.display(),
            problems.join("\n")
        );
    }
    println!(
        "check-fragment: {} options set in {}; {} modules image loads each marked",
        fragment.len(),
        config_path.display(),
        modules.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_their_modules_are_read() {
        let f = parse("# c\nCONFIG_A=y\nCONFIG_B=m # module: b\n\n").unwrap();
        assert_eq!(
            f,
            [
                ("CONFIG_A".into(), "y".into(), None),
                ("CONFIG_B".into(), "m".into(), Some("b".into()))
            ]
        );
        assert!(parse("CONFIG_A=n\n").is_err());
        assert!(parse("A=y\n").is_err());
        assert!(parse("CONFIG_A=y # something\n").is_err());
    }

    #[test]
    fn unset_options_and_unmarked_modules_are_named() {
        let f = parse("CONFIG_A=y\nCONFIG_B=m # module: b\nCONFIG_C=y\n").unwrap();
        let debian = "CONFIG_A=m\nCONFIG_B=m\n# CONFIG_C is not set\n";
        assert_eq!(
            problems(&f, debian, &["b", "z"]),
            [
                "CONFIG_C is not set in the Debian kernel config",
                "module z (image loads it) is marked on no option"
            ]
        );
    }

    /// The fragment in the tree parses and marks every module image loads (the Debian side
    /// needs the kernel package: `image check-fragment`, run by the e2e suite).
    #[test]
    fn the_fragment_in_the_tree_marks_every_module() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fragment = parse(&std::fs::read_to_string(root.join(PATH)).unwrap()).unwrap();
        let everything: String = fragment
            .iter()
            .map(|(o, _, _)| format!("{o}=y\n"))
            .collect();
        assert_eq!(
            problems(&fragment, &everything, &loaded_modules()),
            Vec::<String>::new()
        );
    }
}
