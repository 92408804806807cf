//! Asking the user before something that cannot be undone, as `pct`/`incus` do: only on a
//! terminal; a script says `--yes` (or passes what it trusts) instead of being asked.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

/// Whether the user answers yes to `question` on the terminal; `None` when stdin is no
/// terminal, so there is nobody to ask.
pub fn confirm(question: &str) -> Option<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    if stdin.lock().read_line(&mut answer).is_err() {
        return Some(false);
    }
    Some(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
