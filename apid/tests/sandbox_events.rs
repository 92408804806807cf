//! Events and logs through the real API under `init --sandbox`: Python's xmlrpc.client in the
//! sandbox's network namespace → apid → the Event signals of hostd and init, init's log rings.
//! A container's create/start/stop/delete come in order, a restarted daemon shows up, a
//! host.toml item that failed is listed with its reason, host.log has hostd's lines.

use std::time::Duration;

use testkit::sandbox::{Sandbox, bin_dir, sandbox_possible};
use testkit::{TempDir, skip};

const TEST: &str = "sandbox_events::events_config_failures_and_logs_through_the_api";
const UP: Duration = Duration::from_secs(30);

const SCRIPT: &str = r#"
import ssl, sys, time, xmlrpc.client
tarball, digest = sys.argv[1], sys.argv[2]
ctx = ssl._create_unverified_context()
api = xmlrpc.client.ServerProxy("https://api:secret@127.0.0.1:8443/RPC2", context=ctx)

def fault(call):
    try:
        call()
    except xmlrpc.client.Fault as f:
        return f.faultCode
    sys.exit("no fault")

# host.toml's container on a template nobody has: listed with its reason, and an event.
deadline = time.time() + 20
while True:
    failures = api.host.info().get("config_failures", [])
    if len(failures) >= 2 or time.time() > deadline:
        break
    time.sleep(0.2)
assert failures == [f for f in failures if f["daemon"] == "hostd"], failures
broken = [f for f in failures if f["item"] == "template broken"]
assert broken and "/nonexistent/broken.tar" in broken[0]["reason"], failures
ghost = [f for f in failures if f["item"] == "container ghost"]
assert ghost and "broken" in ghost[0]["reason"], failures
page = api.event.list()
assert any(e["what"] == "config" and e["kind"] == "failed" and e.get("name") == "container ghost"
           for e in page["events"]), page

# A long poll with nothing new ends after its wait, empty.
start = time.time()
empty = api.event.list(page["next"], 1)
assert empty["events"] == [] and empty["next"] == page["next"], empty
assert time.time() - start >= 0.9, time.time() - start
since = page["next"]

getattr(api, "template.import")("bb", tarball, digest)
getattr(api, "ct.create")({"name": "ev1", "template": "bb"})
getattr(api, "ct.start")("ev1")
getattr(api, "ct.stop")("ev1")
getattr(api, "ct.delete")("ev1")

def follow(since, want, what, name):
    seen, deadline = [], time.time() + 20
    while time.time() < deadline:
        page = api.event.list(since, 5)
        for e in page["events"]:
            assert e["kind"] != "lost", e
            assert e["seq"] > since, (e, since)
            if e["what"] == what and e.get("name") == name:
                seen.append(e["kind"])
        since = page["next"]
        if all(k in seen for k in want):
            return seen, since
    sys.exit("events of %s %s: %r, want %r" % (what, name, seen, want))

seen, since = follow(since, ["created", "started", "stopped", "deleted"], "ct", "ev1")
assert seen == ["created", "started", "stopped", "deleted"], seen

# A daemon's restart shows up: stopped, started, ready, in that order.
api.host.restartService("netd")
seen, since = follow(since, ["stopped", "started", "ready"], "service", "netd")
assert seen == ["stopped", "started", "ready"], seen

# A reader from before apid's numbers (or a restart) gets a lost marker first.
far = api.event.list(since + 1000)
assert far["events"][0]["kind"] == "lost", far

# host.log: hostd's lines, by level; a bad service or level is 102.
logs = api.host.log("hostd")
assert logs["lines"], logs
assert all(l["service"] == "hostd" for l in logs["lines"]), logs["lines"][:3]
assert any("hostd ready" in l["text"] for l in logs["lines"]), [l["text"] for l in logs["lines"]][:20]
warn = api.host.log("", "warn")
assert all(l["level"] in ("warn", "error") for l in warn["lines"]), warn["lines"][:3]
assert fault(lambda: api.host.log("nope")) == 102
assert fault(lambda: api.host.log("hostd", "loud")) == 102
# Following: nothing newer than next yet, then the wait ends.
nxt = api.host.log("hostd", "info", logs["next"], 1)
assert all(l["seq"] > logs["next"] for l in nxt["lines"]), nxt
print("ok")
"#;

#[tokio::test(flavor = "current_thread")]
async fn events_config_failures_and_logs_through_the_api() {
    if !sandbox_possible(TEST) {
        return;
    }
    if !std::path::Path::new(testkit::template::BUSYBOX).exists() {
        return skip(
            TEST,
            "no /bin/busybox (Debian's busybox-static) to build the test template",
        );
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => panic!("{why}"),
    };
    let scratch = TempDir::new("apid-events-tpl");
    let root = scratch.0.join("bb");
    testkit::template::busybox_rootfs(&root).expect("busybox rootfs");
    let tarball = scratch.0.join("busybox.tar");
    let digest = testkit::template::tar_dir(&root, &tarball).expect("tar the rootfs");
    let config = testkit::sandbox_config("events-host", None)
        + &format!(
            r#"
[[template]]
name = "broken"
source = "/nonexistent/broken.tar"
sha256 = "sha256:{}"

[[container]]
name = "ghost"
template = "broken"
"#,
            "0".repeat(64)
        );
    let mut sb = Sandbox::start("events", &config, &bins);
    let conn = sb.connect(UP).await;
    sb.wait_all(&conn, "running", UP).await;
    sb.python(SCRIPT, &[&tarball.display().to_string(), &digest]);
    sb.stop();
}
