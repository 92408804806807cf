//! Rendering API answers: aligned tables for people, JSON for scripts.

use model::xmlrpc::{Struct, Value};

/// Left-aligned columns, two spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    }
    out
}

/// A record as `key value` lines, nested members flattened (`spec.disks[0].path`), lists of
/// scalars on one line: the default form of an answer without a table of its own.
pub fn record(v: &Value) -> String {
    record_with(v, &|_, v| text(Some(v)))
}

/// [`record`] with `cell` choosing how a scalar at a key is shown (e.g. bytes in short form).
pub fn record_with(v: &Value, cell: &dyn Fn(&str, &Value) -> String) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    flatten("", v, cell, &mut rows);
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0) + 2;
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}{v}\n"))
        .collect()
}

fn flatten(
    key: &str,
    v: &Value,
    cell: &dyn Fn(&str, &Value) -> String,
    rows: &mut Vec<(String, String)>,
) {
    let join = |k: &str| match key {
        "" => k.to_string(),
        _ => format!("{key}.{k}"),
    };
    match v {
        Value::Struct(members) => {
            for (k, v) in members {
                flatten(&join(k), v, cell, rows);
            }
        }
        // Lists of records one record per index.
        Value::Array(items) if items.iter().any(|i| i.as_struct().is_some()) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{key}[{i}]"), item, cell, rows);
            }
        }
        Value::Array(items) => rows.push((
            key.to_string(),
            items
                .iter()
                .map(|i| text(Some(i)))
                .collect::<Vec<_>>()
                .join(","),
        )),
        _ => rows.push((key.to_string(), cell(key, v))),
    }
}

/// A list of records as a table: a column per member any of them has (name first, then by
/// key), nested members as JSON.
pub fn records_table(list: &Value) -> String {
    let items = list.as_array().unwrap_or_default();
    let mut columns: Vec<&str> = Vec::new();
    for item in items {
        for k in item.as_struct().into_iter().flat_map(|s| s.keys()) {
            if !columns.contains(&k.as_str()) {
                columns.push(k);
            }
        }
    }
    // What a record is called comes first, as in every table of cairnctl.
    if let Some(at) = columns.iter().position(|c| *c == "name") {
        columns[..=at].rotate_right(1);
    }
    if columns.is_empty() {
        // A list of scalars: one per line.
        return items.iter().map(|i| text(Some(i)) + "\n").collect();
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            columns
                .iter()
                .map(|c| text(member(i.as_struct(), c)))
                .collect()
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    table(&headers, &rows)
}

/// One member of a struct answer.
pub fn member<'a>(s: Option<&'a model::xmlrpc::Struct>, key: &str) -> Option<&'a Value> {
    s.and_then(|s| s.get(key))
}

/// A byte count in short form (`64.0M`), `-` when absent.
pub fn bytes_cell(v: Option<&Value>) -> String {
    v.and_then(Value::as_i64)
        .and_then(|n| u64::try_from(n).ok())
        .map_or_else(|| "-".into(), crate::size::human)
}

pub fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Nil) => "-".into(),
        Some(Value::String(s)) | Some(Value::DateTime(s)) => s.clone(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::I8(i)) => i.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Double(d)) => d.to_string(),
        Some(other) => other.to_json().to_string(),
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM:SSZ` (UTC); 0 (never) as `-`.
pub fn utc(secs: i64) -> String {
    if secs <= 0 {
        return "-".into();
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil: exact for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Seconds as `3d 4h 5m 6s`, leading zero units left out.
pub fn duration(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let mut parts = Vec::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 || !parts.is_empty() {
            parts.push(format!("{n}{unit}"));
        }
    }
    parts.push(format!("{s}s"));
    parts.join(" ")
}

pub fn services_table(services: &Value) -> String {
    let rows: Vec<Vec<String>> = services
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let s = s.as_struct().cloned().unwrap_or_default();
            vec![
                text(s.get("name")),
                text(s.get("state")),
                text(s.get("pid")),
                text(s.get("restarts")),
                s.get("since")
                    .and_then(Value::as_i64)
                    .map_or_else(|| "-".into(), utc),
                // Why it last stopped unasked; "-" when it never did (or an older host).
                s.get("last_error")
                    .and_then(Value::as_str)
                    .filter(|e| !e.is_empty())
                    .unwrap_or("-")
                    .to_string(),
            ]
        })
        .collect();
    table(
        &["NAME", "STATE", "PID", "RESTARTS", "SINCE", "LAST ERROR"],
        &rows,
    )
}

pub fn info(v: &Value) -> String {
    let empty = Struct::new();
    let s = v.as_struct().unwrap_or(&empty);
    let mut rows = vec![
        vec!["hostname".to_string(), text(s.get("hostname"))],
        vec!["version".to_string(), text(s.get("version"))],
    ];
    if let Some(k) = s.get("kernel") {
        rows.push(vec!["kernel".into(), text(Some(k))]);
    }
    if let Some(u) = s.get("uptime").and_then(Value::as_i64) {
        rows.push(vec!["uptime".into(), duration(u)]);
    }
    if let Some(e) = s.get("init_error") {
        rows.push(vec!["init".into(), format!("error: {}", text(Some(e)))]);
    }
    if let Some(mode) = s.get("mode") {
        let mut cell = text(Some(mode));
        if let Some(source) = s.get("config_source") {
            cell.push_str(&format!(" (config: {})", text(Some(source))));
        }
        rows.push(vec!["mode".into(), cell]);
    }
    if let Some(problem) = s.get("config_problem") {
        // Its first line: the whole diagnostics are in --json and on the console.
        let problem = text(Some(problem));
        rows.push(vec![
            "config".into(),
            problem.lines().next().unwrap_or_default().to_string(),
        ]);
    }
    if let Some(m) = s.get("management").and_then(Value::as_struct) {
        rows.push(vec!["management".into(), management(m)]);
    }
    let mut out = String::new();
    for row in &rows {
        out.push_str(&format!("{:<12}{}\n", row[0], row[1]));
    }

    let daemons = s
        .get("daemons")
        .and_then(Value::as_struct)
        .cloned()
        .unwrap_or_default();
    let daemon_rows: Vec<Vec<String>> = daemons
        .iter()
        .map(|(name, d)| {
            let d = d.as_struct().cloned().unwrap_or_default();
            let details = match d.get("error") {
                Some(e) => format!("error: {}", text(Some(e))),
                None => d
                    .iter()
                    .filter(|(k, _)| k.as_str() != "version")
                    .map(|(k, v)| format!("{k}={}", text(Some(v))))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            vec![name.clone(), text(d.get("version")), details]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(&["DAEMON", "VERSION", "DETAILS"], &daemon_rows));
    let failures: Vec<Vec<String>> = s
        .get("config_failures")
        .and_then(Value::as_array)
        .unwrap_or_default()
        .iter()
        .map(|f| {
            let f = f.as_struct();
            ["daemon", "item", "reason"]
                .map(|k| text(member(f, k)))
                .to_vec()
        })
        .collect();
    if !failures.is_empty() {
        out.push_str("\nhost.toml items not applied:\n");
        out.push_str(&table(&["DAEMON", "ITEM", "REASON"], &failures));
    }
    if let Some(services) = s.get("services") {
        out.push('\n');
        out.push_str(&services_table(services));
    }
    out
}

/// The API's interface in one cell: `eth0 10.0.2.15/24 (dhcp)`, or what netd said went wrong.
fn management(m: &Struct) -> String {
    let mut cell = [m.get("interface"), m.get("address")]
        .into_iter()
        .flatten()
        .map(|v| text(Some(v)))
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if cell.is_empty() {
        cell = "-".into();
    }
    if let Some(source) = m.get("source") {
        cell.push_str(&format!(" ({})", text(Some(source))));
    }
    if let Some(e) = m.get("error") {
        cell.push_str(&format!(" error: {}", text(Some(e))));
    }
    cell
}

/// An array member as one comma-separated cell.
pub fn joined(s: Option<&model::xmlrpc::Struct>, key: &str) -> String {
    s.and_then(|s| s.get(key))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| text(Some(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `net.list`: one row per network.
pub fn networks_table(networks: &Value) -> String {
    let rows: Vec<Vec<String>> = networks
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let s = n.as_struct();
            let get = |k: &str| text(s.and_then(|s| s.get(k)));
            let list = |k: &str| {
                s.and_then(|s| s.get(k))
                    .and_then(Value::as_array)
                    .map(|a| a.len().to_string())
                    .unwrap_or_else(|| "0".into())
            };
            let addresses = joined(s, "addresses");
            vec![
                get("name"),
                get("kind"),
                list("links"),
                addresses,
                limits(s.and_then(|s| s.get("limits"))),
            ]
        })
        .collect();
    table(&["NAME", "KIND", "LINKS", "ADDRESSES", "LIMITS"], &rows)
}

/// `port.list`: one row per port.
pub fn ports_table(ports: &Value) -> String {
    let rows: Vec<Vec<String>> = ports
        .as_array()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let s = p.as_struct();
            let get = |k: &str| text(s.and_then(|s| s.get(k)));
            let addresses = joined(s, "addresses");
            vec![
                get("name"),
                get("network"),
                get("owner"),
                get("kind"),
                get("vlan"),
                addresses,
                limits(s.and_then(|s| s.get("limits"))),
                get("spoof_drops"),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "NETWORK",
            "OWNER",
            "KIND",
            "VLAN",
            "ADDRESSES",
            "LIMITS",
            "DROPS",
        ],
        &rows,
    )
}

/// A port's or network's limits in one cell, from the guest's view: `in 30M out 20M`
/// (bit/s), `-` when unlimited.
fn limits(v: Option<&Value>) -> String {
    let s = v.and_then(Value::as_struct);
    let rate = |direction: &str| {
        s.and_then(|s| s.get(direction))
            .and_then(Value::as_struct)
            .and_then(|d| d.get("rate_bps"))
            .and_then(Value::as_i64)
            .and_then(|r| u64::try_from(r).ok())
    };
    let cell = [("in", rate("ingress")), ("out", rate("egress"))]
        .into_iter()
        .filter_map(|(label, r)| r.map(|r| format!("{label} {}", crate::rate::human(r))))
        .collect::<Vec<_>>()
        .join(" ");
    if cell.is_empty() { "-".into() } else { cell }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_lists_without_a_table_of_their_own() {
        let v = Value::structure([
            ("name", Value::from("fast")),
            ("size", Value::Int(7)),
            (
                "snapshots",
                Value::Array(vec![Value::structure([("name", Value::from("s1"))])]),
            ),
            (
                "tags",
                Value::Array(vec![Value::from("a"), Value::from("b")]),
            ),
            ("inner", Value::structure([("x", Value::Bool(true))])),
        ]);
        assert_eq!(
            record(&v),
            "inner.x            true\nname               fast\nsize               7\n\
             snapshots[0].name  s1\ntags               a,b\n"
        );
        let list = Value::Array(vec![
            Value::structure([("name", Value::from("a")), ("n", Value::Int(1))]),
            Value::structure([("name", Value::from("b")), ("extra", Value::from("x"))]),
        ]);
        assert_eq!(
            records_table(&list),
            "NAME  N  EXTRA\na     1  -\nb     -  x\n"
        );
        let names = Value::Array(vec![Value::from("a"), Value::from("b")]);
        assert_eq!(records_table(&names), "a\nb\n");
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(90_061), "1d 1h 1m 1s");
        assert_eq!(duration(3600), "1h 0m 0s");
    }

    #[test]
    fn ports_show_limits_and_drops() {
        let rate = |bps: i64| Value::structure([("rate_bps", Value::I8(bps))]);
        let port = |name: &str, limits: Option<Value>| {
            let mut members = vec![
                ("name", Value::from(name)),
                ("network", Value::from("lan")),
                ("owner", Value::from("ct:web1")),
                ("kind", Value::from("veth")),
                ("spoof_drops", Value::Int(3)),
            ];
            members.extend(limits.map(|l| ("limits", l)));
            Value::structure(members)
        };
        let ports = Value::Array(vec![
            port(
                "cv-1",
                Some(Value::structure([
                    ("ingress", rate(30_000_000)),
                    ("egress", rate(1_500_000_000)),
                ])),
            ),
            port("cv-2", None),
        ]);
        let out = ports_table(&ports);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].contains("LIMITS") && lines[0].ends_with("DROPS"),
            "{out}"
        );
        assert!(
            lines[1].contains("in 30M out 1.5G") && lines[1].ends_with('3'),
            "{out}"
        );
        assert!(lines[2].contains(" - "), "{out}");
    }

    #[test]
    fn networks_show_their_aggregate_limits() {
        let rate = |bps: i64| Value::structure([("rate_bps", Value::I8(bps))]);
        let network = |name: &str, limits: Option<Value>| {
            let mut members = vec![
                ("name", Value::from(name)),
                ("kind", Value::from("bridged")),
                ("links", Value::Array(Vec::new())),
                ("addresses", Value::Array(vec![Value::from("10.0.0.1/24")])),
            ];
            members.extend(limits.map(|l| ("limits", l)));
            Value::structure(members)
        };
        let out = networks_table(&Value::Array(vec![
            network(
                "lan",
                Some(Value::structure([("ingress", rate(200_000_000))])),
            ),
            network("dmz", None),
        ]));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with("LIMITS"), "{out}");
        assert!(lines[1].ends_with("in 200M"), "{out}");
        assert!(lines[2].trim_end().ends_with('-'), "{out}");
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["netd".into(), "running".into()],
                vec!["x".into(), "y".into()],
            ],
        );
        assert_eq!(t, "NAME  STATE\nnetd  running\nx     y\n");
    }

    #[test]
    fn services_render() {
        let svc = Value::Array(vec![Value::structure([
            ("name", Value::from("hostd")),
            ("state", Value::from("backoff")),
            ("pid", Value::Int(0)),
            ("restarts", Value::Int(3)),
            ("since", Value::Int(1_700_000_000)),
            ("last_error", Value::from("killed by SIGKILL")),
        ])]);
        assert_eq!(
            services_table(&svc),
            "NAME   STATE    PID  RESTARTS  SINCE                 LAST ERROR\n\
             hostd  backoff  0    3         2023-11-14 22:13:20Z  killed by SIGKILL\n"
        );
    }

    #[test]
    fn json_conversion() {
        let v = Value::structure([(
            "a",
            Value::Array(vec![
                Value::Int(1),
                Value::Nil,
                Value::Base64(b"hi".to_vec()),
            ]),
        )]);
        assert_eq!(v.to_json().to_string(), r#"{"a":[1,null,"aGk="]}"#);
    }

    #[test]
    fn info_with_errors() {
        let v = Value::structure([
            ("hostname", Value::from("h1")),
            ("version", Value::from("0.1.0")),
            ("init_error", Value::from("init is not running")),
            (
                "daemons",
                Value::structure([
                    (
                        "netd",
                        Value::structure([
                            ("version", Value::from("0.1.0")),
                            ("bridges", Value::Int(2)),
                        ]),
                    ),
                    ("stord", Value::structure([("error", Value::from("gone"))])),
                ]),
            ),
            (
                "management",
                Value::structure([
                    ("interface", Value::from("eth0")),
                    ("address", Value::from("10.0.2.15/24")),
                    ("source", Value::from("dhcp")),
                ]),
            ),
        ]);
        let out = info(&v);
        assert!(out.contains("hostname    h1\n"), "{out}");
        assert!(
            out.contains("init        error: init is not running\n"),
            "{out}"
        );
        assert!(
            out.contains("management  eth0 10.0.2.15/24 (dhcp)\n"),
            "{out}"
        );
        assert!(out.contains("netd    0.1.0    bridges=2\n"), "{out}");
        assert!(out.contains("stord   -        error: gone\n"), "{out}");
        let v = Value::structure([
            ("hostname", Value::from("cairn-123456")),
            ("mode", Value::from("maintenance")),
            ("config_source", Value::from("none")),
            (
                "config_problem",
                Value::from("no config (a nor b)\nmore detail"),
            ),
        ]);
        let out = info(&v);
        assert!(
            out.contains("mode        maintenance (config: none)\n"),
            "{out}"
        );
        assert!(out.contains("config      no config (a nor b)\n"), "{out}");
    }
}
