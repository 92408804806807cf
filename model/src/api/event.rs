//! `event.list` and `host.log`: what happened on the host (guests' lifecycle, the services'
//! restarts, config applied or failed) and what the services logged.

use serde::{Deserialize, Serialize};

use super::{actions, rpc_type};

/// The longest an `event.list` or `host.log` call waits for something new (within the API's
/// 30 s budget per request).
pub const MAX_WAIT_S: u32 = 25;

/// At most this many lines per `host.log` answer.
pub const MAX_LINES: u32 = 1000;

/// One event. `what` is the kind of object (`ct`, `vm`, `service`, `config`, `events`), `kind`
/// what happened to it (`created`, `started`, …), `name` which one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub seq: u64,
    /// Unix time (seconds) apid received it.
    pub time: u64,
    pub kind: String,
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What `event.list` answers: the events after `since`, and the `since` of the next call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub next: u64,
}

/// One line a service wrote to its stdout or stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub seq: u64,
    /// Unix time (seconds) init read it.
    pub time: u64,
    pub service: String,
    /// `trace`, `debug`, `info`, `warn` or `error` (`model::logline::Level`).
    pub level: String,
    pub text: String,
}

/// What `host.log` answers (and init's `Logs`, as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    pub next: u64,
    /// Lines after `since` no longer kept (the ring moved on, or a service wrote faster than
    /// init could keep up); left out when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
}

rpc_type!("struct": Event, EventPage, LogLine, LogPage);

actions! { ACTIONS;
    EventList = "event.list", Apid, (since: Option<u64>, wait: Option<u32>) -> EventPage,
        "event.list([since[, wait]]): the events after sequence number since (default 0: every \
         event still kept, up to 1000) as {events: [{seq, time, kind, what, name, detail}], \
         next}; pass next as since to get only newer ones. With wait (seconds, at most 25) and \
         nothing newer yet, answers as soon as an event comes or after wait with none. what is \
         ct, vm, service, config or events; kind is created, started, stopped, crashed, paused, \
         resumed or deleted (ct, vm), started, ready, stopped, crashed or failed (service), \
         applied or failed (config: name is the item, detail why), lost (events: detail says \
         how many a client that fell behind missed). Events of one guest come in the order they \
         happened. apid keeps the last 1000 and starts again at 1 when it restarts: a since \
         beyond the last event is answered with a lost marker and everything kept.";
    HostLog = "host.log", Init, (service: Option<String>, level: Option<String>, since: Option<u64>, wait: Option<u32>) -> LogPage,
        "host.log([service[, level[, since[, wait]]]]): the recent lines init keeps of what \
         the services (netd, stord, hostd, apid; \"\" for all) wrote, at level or above (trace, \
         debug, info (default), warn, error), after sequence number since (default 0), up to \
         1000, as {lines: [{seq, time, service, level, text}], next, lost}; pass next as since \
         to follow. With wait (seconds, at most 25) and no line yet, answers as soon as one \
         comes. lost counts lines after since that are no longer kept (init keeps 256 KiB a \
         service and drops what a service writes faster than it can read). An unknown service \
         or level -> 102.";
}
