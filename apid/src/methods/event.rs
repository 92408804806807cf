//! `event.list` (apid's own ring, `crate::events`) and `host.log` (init's rings of the
//! services' lines).

use std::time::Duration;

use model::api::event::{EventList, EventPage, HostLog, LogPage, MAX_WAIT_S};

use super::{Api, Fault, Method, Serve, answer, method};

pub fn methods() -> Vec<Method> {
    vec![method::<EventList>(), method::<HostLog>()]
}

fn wait_of(wait: Option<u32>) -> Duration {
    Duration::from_secs(wait.unwrap_or(0).min(MAX_WAIT_S).into())
}

impl Serve for EventList {
    async fn serve(self, api: &Api) -> Result<EventPage, Fault> {
        Ok(api
            .events
            .wait_page(self.since.unwrap_or(0), wait_of(self.wait))
            .await)
    }
}

impl Serve for HostLog {
    async fn serve(self, api: &Api) -> Result<LogPage, Fault> {
        let wait = wait_of(self.wait);
        let (service, level) = (
            self.service.unwrap_or_default(),
            self.level.unwrap_or_default(),
        );
        let since = self.since.unwrap_or(0);
        let json = api
            .bus
            .init_call(wait + crate::bus::CALL_TIMEOUT, |init| async move {
                init.logs(
                    &service,
                    &level,
                    since,
                    model::api::event::MAX_LINES,
                    wait.as_secs() as u32,
                )
                .await
            })
            .await?;
        answer("init", &json)
    }
}
