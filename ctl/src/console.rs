//! `cairnctl ct console NAME` and `cairnctl vm console NAME`: this terminal attached to a
//! guest's console through `/streams/console` (docs/api.md, "Streams"), as `incus console`,
//! `qm terminal` and `virsh console` do. Keys go to the guest as they are typed (the terminal in
//! raw mode: Ctrl-C is the guest's), what it prints comes back; Ctrl-] detaches (said on
//! attach) and leaves the guest running. `--log` prints the console log instead (a call).

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use model::fault::FaultCode;
use model::stream::{CONSOLE_PATH, ConsoleStart, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Client;
use crate::ct::CtCommand;
use crate::stream::{self, RawTerminal, Ws};
use crate::vm::VmCommand;

/// The detach key: Ctrl-] (as telnet and virsh).
pub const DETACH: u8 = 0x1d;

/// After stdin ends (input from a pipe), output is still shown until the guest has been quiet
/// this long.
const QUIET_AFTER_EOF: std::time::Duration = std::time::Duration::from_secs(1);

/// The guest an attaching `console` command names: ("ct" | "vm", NAME); None for `--log`.
pub fn target(command: &crate::Command) -> Option<(&'static str, String)> {
    match command {
        crate::Command::Ct {
            command: CtCommand::Console { name, log: false },
        } => Some(("ct", name.clone())),
        crate::Command::Vm {
            command:
                VmCommand::Console {
                    name,
                    log: false,
                    bytes: None,
                },
        } => Some(("vm", name.clone())),
        _ => None,
    }
}

/// Attaches this terminal to the console of `kind` `name` until Ctrl-], the end of stdin, or
/// the host closing the console (the guest stopped, or another session took it over).
pub async fn attach(client: &Client, kind: &str, name: &str) -> anyhow::Result<ExitCode> {
    let start = ConsoleStart {
        kind: kind.to_string(),
        name: name.to_string(),
    };
    let mut ws = stream::open(client, CONSOLE_PATH).await?;
    ws.send(Message::text(start.to_json()))
        .await
        .context("sending the console request")?;
    let raw = if std::io::stdin().is_terminal() {
        RawTerminal::enter()
    } else {
        None
    };
    // "\r\n": in raw mode the terminal no longer turns "\n" into a new line.
    eprint!("Attached to the console of {kind} {name}; detach with Ctrl-]\r\n");
    let ended = session(&mut ws).await;
    drop(raw);
    match ended? {
        End::Detached => eprintln!("\nDetached from {kind} {name} (it runs on)."),
        End::ClosedByHost => {
            eprintln!(
                "\nThe host closed the console of {kind} {name} (it stopped, or another session attached)."
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

enum End {
    Detached,
    ClosedByHost,
}

/// The bytes of `input` before the detach key, and whether it was there.
fn before_detach(input: &[u8]) -> (&[u8], bool) {
    match input.iter().position(|&b| b == DETACH) {
        Some(i) => (&input[..i], true),
        None => (input, false),
    }
}

async fn session(ws: &mut Ws) -> anyhow::Result<End> {
    let mut input = stream::stdin_reader();
    let mut stdin_open = true;
    let quiet = tokio::time::sleep(std::time::Duration::MAX / 4);
    let mut quiet = std::pin::pin!(quiet);
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            msg = ws.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => bail!("the stream broke: {e}"),
                    None => return Ok(End::ClosedByHost),
                };
                match msg {
                    Message::Binary(data) => {
                        stdout.write_all(&data).context("writing to the terminal")?;
                        stdout.flush().context("writing to the terminal")?;
                        if !stdin_open {
                            quiet.as_mut().reset(tokio::time::Instant::now() + QUIET_AFTER_EOF);
                        }
                    }
                    Message::Text(text) => {
                        if let Ok(ServerMessage::Error { code, message }) =
                            ServerMessage::parse(text.as_str())
                        {
                            let _ = ws.close(None).await;
                            let name = FaultCode::from_code(code).map_or("fault", FaultCode::name);
                            bail!("{name} ({code}): {message}");
                        }
                    }
                    Message::Close(_) => return Ok(End::ClosedByHost),
                    _ => {}
                }
            }
            data = input.recv(), if stdin_open => match data {
                Some(data) => {
                    let (typed, detach) = before_detach(&data);
                    if !typed.is_empty() {
                        ws.send(Message::binary(typed.to_vec())).await.context("sending input")?;
                    }
                    if detach {
                        let _ = ws.close(None).await;
                        return Ok(End::Detached);
                    }
                }
                None => {
                    stdin_open = false;
                    quiet.as_mut().reset(tokio::time::Instant::now() + QUIET_AFTER_EOF);
                }
            },
            () = &mut quiet, if !stdin_open => {
                let _ = ws.close(None).await;
                return Ok(End::Detached);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_right_bracket_detaches_after_what_was_typed_before_it() {
        assert_eq!(before_detach(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(before_detach(b"ls\r\x1dmore"), (&b"ls\r"[..], true));
        assert_eq!(before_detach(b"\x1d"), (&b""[..], true));
    }

    #[test]
    fn console_attaches_unless_the_log_is_asked_for() {
        use clap::Parser as _;
        let target_of = |args: &[&str]| {
            let mut argv = vec!["cairnctl"];
            argv.extend_from_slice(args);
            target(&crate::Cli::try_parse_from(argv).unwrap().command)
        };
        assert_eq!(
            target_of(&["ct", "console", "web1"]),
            Some(("ct", "web1".to_string()))
        );
        assert_eq!(
            target_of(&["vm", "console", "deb"]),
            Some(("vm", "deb".to_string()))
        );
        assert_eq!(target_of(&["ct", "console", "web1", "--log"]), None);
        assert_eq!(target_of(&["vm", "console", "deb", "--log"]), None);
        assert_eq!(target_of(&["vm", "console", "deb", "--bytes", "100"]), None);
        assert_eq!(target_of(&["ct", "list"]), None);
    }
}
