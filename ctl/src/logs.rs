//! `cairnctl logs [SERVICE] [-f] [--level L]`: the recent lines init keeps of what the
//! services wrote (`host.log`), and with -f the lines that follow.

use std::io::Write as _;

use model::api::event::{HostLog, LogLine, LogPage};
use model::xmlrpc::from_value;

use crate::client::Client;
use crate::output::utc;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// netd, stord, hostd, apid or init; all of them when left out.
    service: Option<String>,
    /// Follow: print new lines as they come, until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// The least severe level shown: trace, debug, info, warn, error.
    #[arg(long, default_value = "info")]
    level: String,
}

async fn page(client: &Client, args: &LogsArgs, since: u64, wait: u32) -> anyhow::Result<LogPage> {
    let (method, params) = crate::call::call(HostLog {
        service: Some(args.service.clone().unwrap_or_default()),
        level: Some(args.level.clone()),
        since: Some(since),
        wait: Some(wait),
    })?;
    let value = client.call(method, params).await?;
    Ok(from_value(value)?)
}

/// One line as printed: time, service, level, text.
pub fn line(l: &LogLine) -> String {
    format!(
        "{} {:<6} {:<5} {}",
        utc(l.time as i64),
        l.service,
        l.level.to_uppercase(),
        l.text
    )
}

pub async fn run(client: &Client, args: &LogsArgs, json: bool) -> anyhow::Result<()> {
    let mut since = 0;
    let mut first = true;
    loop {
        let wait = if first || !args.follow { 0 } else { 25 };
        let got = page(client, args, since, wait).await?;
        let mut out = std::io::stdout().lock();
        if let Some(lost) = got.lost.filter(|_| !first) {
            writeln!(out, "(… {lost} lines no longer kept)")?;
        }
        for l in &got.lines {
            if json {
                writeln!(out, "{}", serde_json::to_string(l)?)?;
            } else {
                writeln!(out, "{}", line(l))?;
            }
        }
        out.flush()?;
        let more = got.next > since && !got.lines.is_empty();
        since = got.next;
        first = false;
        // Without -f: every page of what is kept now, then the end.
        if !args.follow && !more {
            return Ok(());
        }
    }
}
