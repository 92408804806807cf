//! Fuzzing the host.toml reader (testkit::fuzz), seeded with examples/*.toml, the bad files of
//! the golden tests and the tests' own fixtures. A fixed seed and a small budget here;
//! ci/bench.d/fuzz.sh runs the same test longer (`CAIRN_FUZZ_ITERS`).

use std::path::Path;

use model::config::{ConfigErrors, HostConfig, parse};
use model::net::NetworkSpec;
use testkit::fuzz::{Budget, Mutator, Rng, run};

const FILE: &str = "fuzz.toml";

fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [root.join("../examples"), root.join("tests/bad")] {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|x| x == "toml") {
                files.push(entry.path());
            }
        }
    }
    // Sorted: the corpus, and with it every mutant, must not depend on directory order.
    files.sort();
    let mut corpus: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    corpus.push(testkit::sandbox_config("fuzz", Some("10.50.0")).into_bytes());
    corpus.push(
        format!(
            "[host]\nhostname = \"h\"\n[host.management]\ninterface = \"eth0\"\ndhcp = true\n{}",
            testkit::DEV_API_TOML
        )
        .into_bytes(),
    );
    corpus
}

const TOML_TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"[[",
    b"]]",
    b" = ",
    b"\"",
    b"'",
    b"\"\"\"",
    b"'''",
    b"{ }",
    b"[ ]",
    b",",
    b".",
    b"#",
    b"\n",
    b"\r\n",
    b"\t",
    b"\\u00e9",
    b"\\",
    b"true",
    b"false",
    b"nan",
    b"-inf",
    b"0x7fffffffffffffff",
    b"0o777",
    b"1_000",
    b"1979-05-27T07:32:00Z",
    b"07:32:00",
    b"\"10.0.0.0/24\"",
    b"\"fd00::/64\"",
    b"\"10.0.0.1/33\"",
    b"\"eth0\"",
    b"\"512M\"",
    b"\"1.5T\"",
    b"\"sha256:00\"",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xef\xbb\xbf",
    b"\x00",
];

/// Values to put after a key's `=`: each kind of TOML value, and values at the edges of what
/// host.toml's keys take.
const TOML_VALUES: &[&str] = &[
    "\"\"",
    "\"lan\"",
    "\"a-very-long-name-beyond-fifteen\"",
    "\"Lan\"",
    "0",
    "-1",
    "1",
    "4094",
    "4095",
    "65535",
    "65536",
    "9223372036854775807",
    "1.5",
    "true",
    "[]",
    "[\"eth0\", \"eth0\"]",
    "{}",
    "1979-05-27",
    "\"10.0.0.0/24\"",
    "\"10.0.0.1/24\"",
    "\"10.0.0.0/8\"",
    "\"0.0.0.0/0\"",
    "\"fd00::1/64\"",
    "\"192.0.2.1\"",
    "\"512M\"",
    "\"0\"",
    "\"1.5G\"",
    "\"eth0\"",
    "\"bridged\"",
    "\"routed\"",
    "\"vlan\"",
    "\"generate\"",
    "{ cert = \"/c\", key = \"/k\" }",
    "\"active-backup\"",
];

/// Line-level mutations that mostly keep the TOML well-formed, so that mutants get past the
/// syntax into the schema and cross-section checks: lines dropped, repeated, borrowed from
/// other files, swapped, and values replaced by other values.
fn mutate_toml(rng: &mut Rng, seed: &[u8], corpus_lines: &[String], values: &[String]) -> Vec<u8> {
    let text = String::from_utf8_lossy(seed);
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    for _ in 0..1 + rng.below(3) {
        let n = lines.len();
        let i = rng.below(n);
        match rng.below(6) {
            0 if n > 1 => {
                lines.remove(i);
            }
            1 => {
                let copy = lines[i].clone();
                lines.insert(rng.below(n + 1), copy);
            }
            2 => {
                if let Some(line) = rng.pick(corpus_lines) {
                    lines.insert(rng.below(n + 1), line.clone());
                }
            }
            3 if n > 1 => lines.swap(i, rng.below(n)),
            _ => {
                let keyed: Vec<usize> = (0..n).filter(|&i| lines[i].contains(" = ")).collect();
                if let (Some(&at), Some(value)) = (rng.pick(&keyed), rng.pick(values))
                    && let Some((key, _)) = lines[at].split_once(" = ")
                {
                    lines[at] = format!("{key} = {value}");
                }
            }
        }
    }
    lines.join("\n").into_bytes()
}

/// The number of lines in `text` and the characters on each, as editors count them: a
/// diagnostic's `line:col` must name one of these positions (or the end of a line).
fn line_lengths(text: &str) -> Vec<usize> {
    text.split('\n').map(|l| l.chars().count()).collect()
}

/// Every diagnostic points into the input, says something on one line, names the file, and
/// they come in file order; none is the "passed validation but could not be built" bug report.
fn check_diagnostics(text: &str, errors: &ConfigErrors) -> Result<String, String> {
    let lines = line_lengths(text);
    if errors.0.is_empty() {
        return Err("a refusal without a diagnostic".into());
    }
    for d in &errors.0 {
        let within = d.line >= 1
            && lines
                .get(d.line - 1)
                .is_some_and(|chars| d.col >= 1 && d.col <= chars + 1);
        if !within {
            return Err(format!("{d}: {}:{} is not in the input", d.line, d.col));
        }
        if d.file != FILE {
            return Err(format!("{d}: names {:?}, not the file read", d.file));
        }
        // One line, no control characters: the diagnostics go to a console, one per line.
        if d.message.trim().is_empty() || d.message.chars().any(char::is_control) {
            return Err(format!("{d}: a message must be one line of plain text"));
        }
        if d.message.contains("internal error") {
            return Err(format!(
                "{d}: validation passed a file the reader cannot build"
            ));
        }
    }
    let positions: Vec<(usize, usize)> = errors.0.iter().map(|d| (d.line, d.col)).collect();
    if !positions.is_sorted() {
        return Err(format!("diagnostics out of file order: {positions:?}"));
    }
    // A coarse label: which kind of problem came first.
    let first = &errors.0[0].message;
    let label = first
        .split(['"', ':', ';'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect::<String>();
    Ok(format!("refused: {}", label.trim()))
}

/// What host.toml accepts, the API's own checks accept too: netd reconciles host.toml's
/// networks as `NetworkSpec`s, the same type `net.create` validates.
fn check_accepted(config: &HostConfig) -> Result<String, String> {
    for n in &config.networks {
        let spec = NetworkSpec::from(n);
        spec.validate().map_err(|e| {
            format!(
                "host.toml accepts network {:?}, net.create would refuse it: {e}",
                n.name
            )
        })?;
    }
    Ok(format!(
        "accepted: {} networks, {} containers, {} vms",
        config.networks.len().min(3),
        config.containers.len().min(3),
        config.vms.len().min(3)
    ))
}

#[test]
fn fuzz_host_toml() {
    let seeds = corpus();
    let mutator = Mutator::new(&seeds, TOML_TOKENS).with_corpus_words();
    let lines: Vec<String> = seeds
        .iter()
        .flat_map(|s| {
            String::from_utf8_lossy(s)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut values: Vec<String> = TOML_VALUES.iter().map(|v| v.to_string()).collect();
    values.extend(
        lines
            .iter()
            .filter_map(|l| l.split_once(" = ").map(|(_, v)| v.to_string())),
    );
    values.sort();
    values.dedup();
    let report = run(
        "host.toml",
        Budget::from_env(6_000),
        &seeds,
        |rng, seed| {
            // Half the mutants break the syntax (the TOML parser's errors and their
            // positions), half keep it and break the schema.
            if rng.chance(1, 2) {
                mutator.mutate(rng, seed)
            } else {
                mutate_toml(rng, seed, &lines, &values)
            }
        },
        |input: &Vec<u8>| {
            // init reads the file as UTF-8 and reports the read error otherwise; the parser
            // only ever sees text.
            let text = String::from_utf8_lossy(input);
            match parse(FILE, &text) {
                Ok(config) => check_accepted(&config),
                Err(errors) => check_diagnostics(&text, &errors),
            }
        },
    );
    assert!(
        report.outcomes.keys().any(|k| k.starts_with("accepted")),
        "{report}: {:?}",
        report.outcomes
    );
    assert!(
        report.outcomes.len() >= 40,
        "{report}: {:?}",
        report.outcomes
    );
}

/// The property checks themselves: a diagnostic past the end of the input is caught.
#[test]
fn diagnostics_outside_the_input_are_caught() {
    let text = "[host]\nhostname = 1\n";
    let Err(errors) = parse(FILE, text) else {
        panic!("a bad file was accepted");
    };
    assert!(check_diagnostics(text, &errors).is_ok());
    let mut moved = errors.clone();
    moved.0[0].line = 9;
    assert!(check_diagnostics(text, &moved).is_err());
    let mut moved = errors;
    moved.0[0].col = 99;
    assert!(check_diagnostics(text, &moved).is_err());
}
