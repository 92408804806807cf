//! The host's events for `event.list`: a bounded ring with sequence numbers, filled from the
//! `Event(what, kind, name, detail)` signals init and hostd send (`model::dbus::EVENT_SIGNAL`)
//! and from config failures apid sees appear (`crate::state`). A reader that fell behind the
//! ring, or asks with a number from before apid's restart, gets a `lost` marker first.
//!
//! D-Bus delivers one sender's signals in the order it sent them, and one task appends them
//! here, so the events of one guest stay in order.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use model::api::event::{Event, EventPage};
use tokio::sync::watch;

/// Events kept.
pub const CAPACITY: usize = 1000;

pub struct Events {
    ring: Mutex<Ring>,
    /// The last sequence number given out: waiting readers watch it.
    last: watch::Sender<u64>,
}

struct Ring {
    events: VecDeque<Event>,
    next_seq: u64,
    capacity: usize,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Default for Events {
    fn default() -> Self {
        Events::new(CAPACITY)
    }
}

impl Events {
    pub fn new(capacity: usize) -> Events {
        Events {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                next_seq: 1,
                capacity: capacity.max(1),
            }),
            last: watch::channel(0).0,
        }
    }

    /// Appends one event and wakes the readers waiting for it.
    pub fn push(&self, what: &str, kind: &str, name: &str, detail: &str) {
        let seq = {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            let seq = ring.next_seq;
            ring.next_seq += 1;
            ring.events.push_back(Event {
                seq,
                time: now(),
                kind: kind.to_string(),
                what: what.to_string(),
                name: some(name),
                detail: some(detail),
            });
            while ring.events.len() > ring.capacity {
                ring.events.pop_front();
            }
            seq
        };
        self.last.send_replace(seq);
    }

    /// The events after `since`, led by a `lost` marker when some after it are gone.
    pub fn page(&self, since: u64) -> EventPage {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let last = ring.next_seq - 1;
        let first = ring.events.front().map_or(ring.next_seq, |e| e.seq);
        let mut events = Vec::new();
        let since = if since > last {
            // A number this apid never gave: it restarted since (its numbers start at 1).
            events.push(lost_marker(
                0,
                format!(
                    "the event log restarted (apid restarted): events up to {since} are gone; \
                     what is kept since follows"
                ),
            ));
            0
        } else {
            if since > 0 && since + 1 < first {
                let missed = first - 1 - since;
                events.push(lost_marker(
                    first - 1,
                    format!("{missed} events were dropped before they were read"),
                ));
            }
            since
        };
        events.extend(ring.events.iter().filter(|e| e.seq > since).cloned());
        EventPage { events, next: last }
    }

    /// As `page`, but with nothing after `since` yet waits up to `wait` for an event.
    pub async fn wait_page(&self, since: u64, wait: Duration) -> EventPage {
        let mut last = self.last.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let page = self.page(since);
            if !page.events.is_empty() || wait.is_zero() {
                return page;
            }
            last.mark_unchanged();
            // Looked again after subscribing: an event pushed meanwhile is in this page.
            let page = self.page(since);
            if !page.events.is_empty() {
                return page;
            }
            match tokio::time::timeout_at(deadline, last.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.page(since),
            }
        }
    }
}

fn lost_marker(seq: u64, detail: String) -> Event {
    Event {
        seq,
        time: now(),
        kind: "lost".into(),
        what: "events".into(),
        name: None,
        detail: Some(detail),
    }
}

/// Appends the daemons' `Event` signals to `events` for as long as apid runs, from `conn`
/// (apid's watcher connection).
pub async fn follow(conn: zbus::Connection, events: std::sync::Arc<Events>) {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .member(model::dbus::EVENT_SIGNAL)
        .path_namespace("/org/cairn")
        .build();
    let stream = match rule {
        Ok(rule) => {
            zbus::MessageStream::for_match_rule(rule, &conn, std::num::NonZeroUsize::new(CAPACITY))
                .await
        }
        Err(e) => Err(e),
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow the daemons' events; event.list stays empty");
            return;
        }
    };
    while let Some(msg) = stream.next().await {
        let Ok(msg) = msg else { continue };
        let header = msg.header();
        let from_cairn = header
            .interface()
            .is_some_and(|i| matches!(i.as_str(), model::dbus::INIT_NAME | model::dbus::HOST_NAME));
        if !from_cairn {
            continue;
        }
        match msg.body().deserialize::<(String, String, String, String)>() {
            Ok((what, kind, name, detail)) => events.push(&what, &kind, &name, &detail),
            Err(e) => tracing::debug!(error = %e, "an Event signal of the wrong shape"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_get_numbers_and_follow_on() {
        let ev = Events::new(10);
        assert_eq!(ev.page(0), EventPage::default());
        ev.push("ct", "created", "web", "");
        ev.push("ct", "started", "web", "");
        let page = ev.page(0);
        assert_eq!(page.next, 2);
        let kinds: Vec<_> = page.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["created", "started"]);
        assert_eq!(page.events[0].name.as_deref(), Some("web"));
        assert_eq!(page.events[0].detail, None);
        assert_eq!(page.events[1].seq, 2);
        let page = ev.page(1);
        assert_eq!(page.events.len(), 1);
        assert!(ev.page(2).events.is_empty());
        assert_eq!(ev.page(2).next, 2);
    }

    #[test]
    fn a_reader_that_fell_behind_gets_a_lost_marker() {
        let ev = Events::new(3);
        for i in 0..10 {
            ev.push("vm", "started", &format!("v{i}"), "");
        }
        // Kept: 8, 9, 10. A reader at 2 missed 3..=7.
        let page = ev.page(2);
        assert_eq!(page.events[0].kind, "lost");
        assert_eq!(page.events[0].what, "events");
        assert_eq!(page.events[0].seq, 7);
        assert!(
            page.events[0]
                .detail
                .as_deref()
                .unwrap()
                .starts_with("5 events")
        );
        let seqs: Vec<_> = page.events[1..].iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [8, 9, 10]);
        // Reading from the start, or right behind the ring, loses nothing.
        assert_eq!(ev.page(0).events.len(), 3);
        assert_eq!(ev.page(7).events.len(), 3);
        assert_eq!(ev.page(7).events[0].kind, "started");
        // A number from before a restart.
        let page = ev.page(500);
        assert_eq!(page.events[0].kind, "lost");
        assert_eq!(page.events.len(), 4);
        assert_eq!(page.next, 10);
    }

    #[tokio::test]
    async fn a_long_poll_wakes_for_the_next_event() {
        let ev = std::sync::Arc::new(Events::new(10));
        ev.push("ct", "created", "a", "");
        let pusher = ev.clone();
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            pusher.push("ct", "started", "a", "");
        });
        let page = ev.wait_page(1, Duration::from_secs(10)).await;
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].kind, "started");
        assert!(started.elapsed() < Duration::from_secs(5));
        let started = std::time::Instant::now();
        let page = ev.wait_page(2, Duration::from_millis(150)).await;
        assert!(page.events.is_empty());
        assert_eq!(page.next, 2);
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}
