//! `cairnctl disks` and `cairnctl install`: the disks table, and an install followed to its end
//! with a progress bar (host.installStatus polled twice a second).

use std::time::Duration;

use model::xmlrpc::Value;

use crate::client::Client;
use crate::output::{bytes_cell, member, table, text};
use crate::progress::Progress;

/// `host.disks`: one row per disk.
pub fn disks_table(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let d = d.as_struct();
            let holds = text(member(d, "holds"));
            let unusable = text(member(d, "unusable"));
            vec![
                text(member(d, "name")),
                bytes_cell(member(d, "size_bytes")),
                text(member(d, "model")),
                if holds.is_empty() {
                    "blank".into()
                } else {
                    holds
                },
                if unusable.is_empty() {
                    "yes".into()
                } else {
                    format!("no: {unusable}")
                },
            ]
        })
        .collect();
    table(&["NAME", "SIZE", "MODEL", "HOLDS", "INSTALLABLE"], &rows)
}

/// Polls `status` (host.installStatus, host.updateStatus) until the job ends, drawing the bar
/// on stderr (when it is a terminal; otherwise one line per step). Returns the last report.
pub async fn follow(client: &Client, status: &str) -> anyhow::Result<Value> {
    let mut progress = Progress::of_bytes();
    let mut last_step = String::new();
    loop {
        let report = client.call(status, vec![]).await?;
        let r = report.as_struct();
        let int = |k: &str| {
            member(r, k)
                .and_then(Value::as_i64)
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        let state = text(member(r, "state"));
        let step = text(member(r, "step"));
        let (done, total) = (int("done_bytes"), int("total_bytes"));
        if progress.visible() {
            progress.update(done, total, &step);
        } else if step != last_step {
            eprintln!("{}", progress.line(done, total, &step));
        }
        last_step = step;
        if state != "running" {
            progress.finish();
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_show_what_they_hold() {
        let mut blank = model::xmlrpc::Struct::new();
        blank.insert("name".into(), Value::from("vda"));
        blank.insert("size_bytes".into(), Value::from_u64(2 << 30));
        blank.insert("holds".into(), Value::from(""));
        blank.insert("unusable".into(), Value::from(""));
        let mut used = blank.clone();
        used.insert("name".into(), Value::from("vdb"));
        used.insert("holds".into(), Value::from("an XFS filesystem"));
        used.insert("unusable".into(), Value::from("read-only"));
        let out = disks_table(&Value::Array(vec![
            Value::Struct(blank),
            Value::Struct(used),
        ]));
        assert!(
            out.contains("vda") && out.contains("blank") && out.contains("yes"),
            "{out}"
        );
        assert!(
            out.contains("an XFS filesystem") && out.contains("no: read-only"),
            "{out}"
        );
    }
}
