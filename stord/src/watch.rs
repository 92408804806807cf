//! Watching the pools that can fill (thin): every second each is looked at — grown when its
//! device grew — and when one is full, the guests using its volumes are held (hostd's
//! `Hold`: a container frozen, a VM paused) and `PoolSpace` is signalled; once it has room
//! again, those same guests go on. dm-thin holds the writes meanwhile (no_space_timeout 0),
//! so nothing a guest wrote is lost.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::dbus::{Host1Proxy, STORAGE_PATH};
use zbus::object_server::SignalEmitter;

use crate::dbus::Storage1;
use crate::pool::{PoolSpace, Pools};

const EVERY: Duration = Duration::from_secs(1);

pub async fn run(bus: zbus::Connection, pools: Arc<Mutex<Pools>>) {
    // The guests this watcher held, by pool: only those are let go.
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        tokio::time::sleep(EVERY).await;
        let looked = {
            let pools = pools.clone();
            tokio::task::spawn_blocking(move || {
                pools.lock().unwrap_or_else(|e| e.into_inner()).watch()
            })
            .await
        };
        let Ok(spaces) = looked else { continue };
        for space in spaces {
            let was_full = held.contains_key(&space.pool);
            if space.full == was_full {
                continue;
            }
            let guests = if space.full {
                tracing::warn!(pool = %space.pool, guests = ?space.guests, "thin pool full: holding its guests");
                let done = hold_all(&bus, &space.guests, true).await;
                held.insert(space.pool.clone(), done.clone());
                done
            } else {
                let guests = held.remove(&space.pool).unwrap_or_default();
                tracing::info!(pool = %space.pool, ?guests, "thin pool has room again: letting its guests go on");
                hold_all(&bus, &guests, false).await;
                Vec::new()
            };
            record(&pools, &space, guests.clone()).await;
            signal(&bus, &space, &guests).await;
        }
    }
}

/// Holds (or releases) each guest; returns those it did.
async fn hold_all(bus: &zbus::Connection, guests: &[String], hold: bool) -> Vec<String> {
    let Ok(host) = Host1Proxy::new(bus).await else {
        tracing::error!("cannot reach hostd to hold the guests of a full pool");
        return Vec::new();
    };
    let mut done = Vec::new();
    for g in guests {
        match host.hold(g, hold).await {
            Ok(true) => done.push(g.clone()),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(guest = %g, hold, error = %e, "cannot hold or release a guest")
            }
        }
    }
    done
}

async fn record(pools: &Arc<Mutex<Pools>>, space: &PoolSpace, guests: Vec<String>) {
    let (pools, pool) = (pools.clone(), space.pool.clone());
    let _ = tokio::task::spawn_blocking(move || {
        pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_held(&pool, guests);
    })
    .await;
}

async fn signal(bus: &zbus::Connection, space: &PoolSpace, guests: &[String]) {
    match SignalEmitter::new(bus, STORAGE_PATH) {
        Ok(emitter) => {
            if let Err(e) = Storage1::pool_space(&emitter, &space.pool, space.full, guests).await {
                tracing::debug!(error = %e, "cannot signal PoolSpace");
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot signal PoolSpace"),
    }
}
