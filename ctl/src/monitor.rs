//! `cairnctl monitor`: follows the host's events (`event.list` long polls), one line each, as
//! `incus monitor` does.

use std::io::Write as _;

use model::api::event::{Event, EventList, EventPage};
use model::xmlrpc::from_value;

use crate::client::Client;
use crate::output::utc;

#[derive(clap::Args)]
pub struct MonitorArgs {
    /// Start after this event number (0: every event the host still keeps); without it only
    /// new events are shown.
    #[arg(long)]
    since: Option<u64>,
    /// Only events about this kind of object: ct, vm, service, config (and the events' own
    /// lost markers).
    #[arg(long = "type", value_name = "WHAT")]
    what: Option<String>,
    /// Print what is there now and end, instead of following.
    #[arg(long)]
    once: bool,
}

async fn page(client: &Client, since: u64, wait: u32) -> anyhow::Result<EventPage> {
    let (method, params) = crate::call::call(EventList {
        since: Some(since),
        wait: Some(wait),
    })?;
    let value = client.call(method, params).await?;
    Ok(from_value(value)?)
}

/// One event as a line: time, what, name, kind, detail.
pub fn line(e: &Event) -> String {
    let mut out = format!(
        "{:>6} {} {:<8} {:<16} {:<8}",
        e.seq,
        utc(e.time as i64),
        e.what,
        e.name.as_deref().unwrap_or("-"),
        e.kind
    );
    if let Some(d) = &e.detail {
        out.push(' ');
        out.push_str(d);
    }
    out.trim_end().to_string()
}

/// Follows the events until interrupted (or once), as lines or JSON lines.
pub async fn run(client: &Client, args: &MonitorArgs, json: bool) -> anyhow::Result<()> {
    let mut since = match args.since {
        Some(n) => n,
        None => page(client, 0, 0).await?.next,
    };
    let wanted = |e: &Event| {
        args.what
            .as_deref()
            .is_none_or(|w| e.what == w || e.what == "events")
    };
    loop {
        let got = page(client, since, if args.once { 0 } else { 25 }).await?;
        let mut out = std::io::stdout().lock();
        for e in got.events.iter().filter(|e| wanted(e)) {
            if json {
                writeln!(out, "{}", serde_json::to_string(e)?)?;
            } else {
                writeln!(out, "{}", line(e))?;
            }
        }
        out.flush()?;
        since = got.next;
        if args.once {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_line() {
        let e = Event {
            seq: 7,
            time: 1_700_000_000,
            kind: "crashed".into(),
            what: "vm".into(),
            name: Some("deb".into()),
            detail: Some("killed by SIGKILL".into()),
        };
        let l = line(&e);
        assert!(l.starts_with("     7 "), "{l}");
        assert!(
            l.contains(" vm ") && l.contains("deb") && l.ends_with("crashed  killed by SIGKILL"),
            "{l}"
        );
    }
}
