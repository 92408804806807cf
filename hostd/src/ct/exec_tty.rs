//! Exec with a terminal (Host1.ExecTty, the `/streams/exec` of apid): the command runs through
//! the same helper as [`super::exec`] (`hostd --ct-exec`, which joins the container), with a
//! new pty's slave as its stdin, stdout and stderr. The helper's child becomes a session leader
//! with the pty as its controlling terminal, so the line discipline turns Ctrl-C (0x03) into
//! SIGINT for the foreground job and a closed master into SIGHUP, as in an ssh session. The
//! master goes to the caller (apid), which owns the terminal from then on: hostd keeps no
//! copy, so the caller closing it hangs the terminal up. There is no deadline: the exec ends
//! when its command does.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::error::{HostError, HostResult};

/// Set in the helper's environment: the command gets the terminal on its stdin.
pub const TTY_VAR: &str = "CAIRN_EXEC_TTY";
/// Set in the helper's environment: a JSON object of variables for the command.
pub const ENV_VAR: &str = "CAIRN_EXEC_ENV";
/// What the helper's deadline is set to for a terminal: none worth the name (ten years).
const NO_DEADLINE_S: u64 = 10 * 365 * 24 * 3600;
/// Terminal execs running at once; more are refused (Busy) rather than piling up.
pub const MAX_RUNNING: usize = 64;
/// How long the exit code of an ended exec is kept for an `ExecWait` that comes late.
const KEEP_ENDED: Duration = Duration::from_secs(60);

struct Entry {
    /// The helper's pid (host's pid namespace).
    helper: u32,
    /// The exit code once the helper was reaped.
    exit: watch::Receiver<Option<i32>>,
    ended: Option<Instant>,
}

static EXECS: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn execs() -> std::sync::MutexGuard<'static, BTreeMap<u64, Entry>> {
    EXECS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks what the caller asked for, before anything starts.
pub fn check(
    argv: &[String],
    env_json: &str,
    rows: u16,
    cols: u16,
) -> HostResult<BTreeMap<String, String>> {
    if argv.first().is_none_or(String::is_empty) {
        return Err(HostError::InvalidArgs(
            "argv must hold the command to run and its arguments".into(),
        ));
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(HostError::InvalidArgs(format!("argv[{i}] has a NUL byte")));
    }
    model::stream::check_size(rows, cols).map_err(|e| HostError::InvalidArgs(e.0))?;
    let env: BTreeMap<String, String> = if env_json.trim().is_empty() {
        BTreeMap::new()
    } else {
        serde_json::from_str(env_json).map_err(|e| {
            HostError::InvalidArgs(format!("env_json: not a JSON object of strings: {e}"))
        })?
    };
    if env.len() > model::stream::MAX_ENV {
        return Err(HostError::InvalidArgs(format!(
            "env_json: more than {} variables",
            model::stream::MAX_ENV
        )));
    }
    if let Some(k) = env
        .iter()
        .find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
        .map(|(k, _)| k)
    {
        return Err(HostError::InvalidArgs(format!(
            "env_json: {k:?} is not a variable name, or its value has a NUL byte"
        )));
    }
    Ok(env)
}

/// Starts `argv` in container `name` (its init is `pid`) on a new pty; (id, master).
pub async fn start(
    exe: &Path,
    name: &str,
    pid: u32,
    argv: &[String],
    env: &BTreeMap<String, String>,
    rows: u16,
    cols: u16,
) -> HostResult<(u64, OwnedFd)> {
    reap_old();
    if execs().values().filter(|e| e.ended.is_none()).count() >= MAX_RUNNING {
        return Err(HostError::Busy(format!(
            "{MAX_RUNNING} terminal execs are running; try again when one has ended"
        )));
    }
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None)
        .map_err(|e| HostError::Failed(format!("opening a pty: {e}")))?;
    // Neither end may leak into the helper beyond its stdio (dup2 clears the flag there): a
    // master held by the command would keep its own terminal from ever hanging up.
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| HostError::Failed(format!("preparing the pty: {e}")))?;
    }
    let stdio = |fd: &OwnedFd| -> HostResult<Stdio> {
        fd.try_clone()
            .map(Stdio::from)
            .map_err(|e| HostError::io("preparing the pty", e))
    };
    let env_json = serde_json::to_string(env).unwrap_or_else(|_| "{}".into());
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--ct-exec")
        .arg(name)
        .arg(pid.to_string())
        .arg(NO_DEADLINE_S.to_string())
        .arg("--")
        .args(argv)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env(TTY_VAR, "1")
        .env(ENV_VAR, env_json)
        .stdin(stdio(&pty.slave)?)
        .stdout(stdio(&pty.slave)?)
        .stderr(stdio(&pty.slave)?);
    let child = cmd
        .spawn()
        .map_err(|e| HostError::io(format!("starting {}", exe.display()), e))?;
    // hostd's copies of the slave go now: the terminal's life is the command's and the
    // caller's alone.
    drop(cmd);
    drop(pty.slave);
    let helper = child.id().unwrap_or(0);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = watch::channel(None);
    execs().insert(
        id,
        Entry {
            helper,
            exit: rx,
            ended: None,
        },
    );
    let ct = name.to_string();
    tokio::spawn(async move {
        let mut child = child;
        let code = match child.wait().await {
            Ok(status) => status_code(status),
            Err(e) => {
                tracing::warn!(ct, id, error = %e, "exec -t: waiting for the helper failed");
                super::exec::HELPER_FAILED
            }
        };
        tracing::info!(ct, id, code, "exec -t ended");
        if let Some(e) = execs().get_mut(&id) {
            e.ended = Some(Instant::now());
        }
        let _ = tx.send(Some(code));
    });
    Ok((id, pty.master))
}

fn status_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(128)
}

/// Forgets execs that ended more than [`KEEP_ENDED`] ago.
fn reap_old() {
    execs().retain(|_, e| e.ended.is_none_or(|t| t.elapsed() < KEEP_ENDED));
}

/// The exit code of exec `id`, once it has ended.
pub async fn wait(id: u64) -> HostResult<i32> {
    let rx = execs().get(&id).map(|e| e.exit.clone());
    let Some(mut rx) = rx else {
        return Err(HostError::NotFound(format!(
            "no terminal exec {id} (it ended more than a minute ago, or never was)"
        )));
    };
    let code = rx
        .wait_for(Option::is_some)
        .await
        .map(|c| c.unwrap_or(super::exec::HELPER_FAILED))
        .map_err(|_| HostError::Failed(format!("exec {id}: its reaper went away")))?;
    // The entry stays until it is [`KEEP_ENDED`] old: a caller whose wait was cut off (its
    // client went away just then) may ask again.
    Ok(code)
}

/// Sends `signal` to exec `id`'s command and the process group it leads.
pub fn signal(id: u64, signal: i32) -> HostResult<()> {
    let sig = Signal::try_from(signal)
        .map_err(|_| HostError::InvalidArgs(format!("signal {signal} is not a signal number")))?;
    let helper = match execs().get(&id) {
        Some(e) if e.ended.is_none() => e.helper,
        Some(_) => {
            return Err(HostError::Conflict(format!("terminal exec {id} has ended")));
        }
        None => return Err(HostError::NotFound(format!("no terminal exec {id}"))),
    };
    let Some(command) = child_of(helper) else {
        return Err(HostError::Conflict(format!(
            "terminal exec {id} has no command running (starting or ending)"
        )));
    };
    let pid = Pid::from_raw(command);
    // The command leads its session and process group: what it started in its group (a
    // pipeline) gets the signal too.
    nix::sys::signal::killpg(pid, sig)
        .or_else(|_| nix::sys::signal::kill(pid, sig))
        .map_err(|e| HostError::Failed(format!("signalling exec {id}: {e}")))
}

/// The helper's one child (the command), by the parent pid /proc shows.
fn child_of(helper: u32) -> Option<i32> {
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold anything, so split after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(helper) {
            return Some(pid);
        }
    }
    None
}

// ---- In the helper (`hostd --ct-exec` started by `start`) ----

/// Whether this helper runs a command on a terminal.
pub fn helper_has_tty() -> bool {
    std::env::var_os(TTY_VAR).is_some_and(|v| v == "1")
}

/// The command's environment on a terminal: the caller's variables, then `base` (PATH,
/// container=cairn) for what they did not set (container= always), and TERM=xterm by default.
pub fn helper_env(base: Vec<CString>) -> Vec<CString> {
    let asked: BTreeMap<String, String> = std::env::var(ENV_VAR)
        .ok()
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default();
    let mut env: Vec<CString> = asked
        .iter()
        .filter(|(k, _)| k.as_str() != "container")
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    let named = |e: &CString, k: &str| {
        e.as_bytes()
            .split(|b| *b == b'=')
            .next()
            .is_some_and(|n| n == k.as_bytes())
    };
    for b in base {
        if !env.iter().any(|e| {
            b.as_bytes()
                .split(|c| *c == b'=')
                .next()
                .is_some_and(|n| named(e, &String::from_utf8_lossy(n)))
        }) {
            env.push(b);
        }
    }
    if !env.iter().any(|e| named(e, "TERM")) {
        env.extend(CString::new("TERM=xterm").ok());
    }
    env
}

/// In the helper's child, before exec: a new session with the terminal on stdin as its
/// controlling terminal.
pub fn take_terminal() -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal), no pointer.
    if unsafe { libc::ioctl(std::io::stdin().as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!(
            "making the pty the controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_anything_starts() {
        let sh = vec!["sh".to_string()];
        assert!(check(&sh, "", 24, 80).unwrap().is_empty());
        assert_eq!(
            check(&sh, r#"{"TERM":"vt100"}"#, 24, 80).unwrap()["TERM"],
            "vt100"
        );
        for (argv, env, rows, cols) in [
            (vec![], "{}", 24, 80),
            (vec!["".to_string()], "{}", 24, 80),
            (vec!["a\0b".to_string()], "{}", 24, 80),
            (sh.clone(), "{}", 0, 80),
            (sh.clone(), "{}", 24, 1001),
            (sh.clone(), "[1]", 24, 80),
            (sh.clone(), r#"{"A=B":"x"}"#, 24, 80),
            (sh.clone(), r#"{"A":1}"#, 24, 80),
        ] {
            assert!(
                matches!(
                    check(&argv, env, rows, cols),
                    Err(HostError::InvalidArgs(_))
                ),
                "{argv:?} {env} {rows}x{cols}"
            );
        }
    }

    #[test]
    fn the_command_environment_puts_the_callers_first_and_keeps_container() {
        let base: Vec<CString> = ["PATH=/bin", "container=cairn"]
            .iter()
            .map(|s| CString::new(*s).unwrap())
            .collect();
        // SAFETY: this test alone reads or writes ENV_VAR, and only here.
        unsafe { std::env::set_var(ENV_VAR, r#"{"PATH":"/opt/bin","container":"x","LANG":"C"}"#) };
        let env: Vec<String> = helper_env(base)
            .into_iter()
            .map(|c| c.into_string().unwrap())
            .collect();
        // SAFETY: as above.
        unsafe { std::env::remove_var(ENV_VAR) };
        assert_eq!(
            env,
            ["LANG=C", "PATH=/opt/bin", "container=cairn", "TERM=xterm"]
        );
    }

    #[test]
    fn unknown_and_ended_execs_are_told_apart() {
        assert!(matches!(signal(u64::MAX, 2), Err(HostError::NotFound(_))));
        assert!(matches!(
            signal(u64::MAX, 0),
            Err(HostError::InvalidArgs(_))
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(
            rt.block_on(wait(u64::MAX)),
            Err(HostError::NotFound(_))
        ));
    }
}
