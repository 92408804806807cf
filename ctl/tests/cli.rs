//! The cairnctl binary, run as a user would: locally for `config check`, and against the real
//! apid served in-process over HTTPS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use apid::bus::Bus;
use apid::http::{Limits, Server, Service};
use apid::methods::Api;
use model::config::HostConfig;

const TOKEN: &str = "ctl-test-token";

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cairnctl-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// cairnctl with nothing from the environment of whoever runs the tests: no CAIRN_* variables
/// and a config directory of its own (none of the user's remotes).
fn cairnctl(args: &[&str]) -> Output {
    cairnctl_in(args, &std::env::temp_dir().join("cairnctl-test-no-config"))
}

fn cairnctl_in(args: &[&str], config_home: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(args)
        .env_remove("CAIRN_TOKEN")
        .env_remove("CAIRN_URL")
        .env_remove("CAIRN_FINGERPRINT")
        .env("XDG_CONFIG_HOME", config_home)
        .output()
        .expect("cairnctl runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn config_check_reports_a_bad_file() {
    let dir = TempDir::new("check");
    let file = dir.0.join("host.toml");
    std::fs::write(&file, "[host]\nhostname = 42\n[api\n").unwrap();
    let path = file.display().to_string();
    let out = cairnctl(&["config", "check", &path]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    // Every diagnostic is `file:line:col: message`.
    let first = err.lines().next().expect("a diagnostic");
    let rest = first
        .strip_prefix(&format!("{path}:"))
        .expect("starts with the file name");
    let mut parts = rest.splitn(3, ':');
    assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{first}");
    assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{first}");
    assert!(!parts.next().unwrap().trim().is_empty(), "{first}");
}

#[test]
fn config_check_of_a_missing_file_fails() {
    let out = cairnctl(&["config", "check", "/nonexistent/host.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("/nonexistent/host.toml:1:1: "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn remote_commands_need_url_token_and_trust() {
    let out = cairnctl(&["info"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--url"), "{}", stderr(&out));
    let out = cairnctl(&["--url", "https://127.0.0.1:1", "info"]);
    assert!(stderr(&out).contains("CAIRN_TOKEN"), "{}", stderr(&out));
    let out = cairnctl(&["--url", "https://127.0.0.1:1", "--token", "t", "info"]);
    assert!(stderr(&out).contains("--ca-cert"), "{}", stderr(&out));
    let out = cairnctl(&[
        "--url",
        "http://127.0.0.1:1",
        "--token",
        "t",
        "--insecure",
        "info",
    ]);
    assert!(stderr(&out).contains("https://"), "{}", stderr(&out));
}

fn config() -> HostConfig {
    testkit::api_host_config("ctlhost", "ctl", TOKEN)
}

/// apid without a bus: host.info answers with per-daemon errors, host.services is a fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_apid() {
    let state = TempDir::new("state");
    let config = config();
    let tls = apid::tls::server_config(&config, &state.0).unwrap();
    let server = Server::bind(SocketAddr::new(config.api.listen, 0), tls)
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}", server.local_addr().unwrap().port());
    let service = Service::new(
        Api::new("ctlhost".into(), Bus::new(None)).with_uploads(
            apid::upload::Uploads::new(&state.0.join("uploads"), std::time::Duration::from_secs(5))
                .unwrap(),
        ),
        apid::token_digests(&config),
        Limits::default(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(service, async move {
        let _ = stopped.await;
    }));
    let cert = apid::tls::generated_dir(&state.0)
        .join("cert.pem")
        .display()
        .to_string();

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cairnctl(&args)
        })
    };
    let base = |extra: &[&str]| {
        let mut v: Vec<String> = ["--url", &url, "--ca-cert", &cert]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    let out = run(base(&["--token", TOKEN, "info"])).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("hostname    ctlhost\n"), "{text}");
    assert!(text.contains("\nmanagement  "), "{text}");
    assert!(text.contains("DAEMON"), "{text}");
    assert!(
        text.contains("netd    -        error: apid is not connected to the bus"),
        "{text}"
    );

    let out = run(base(&["--token", TOKEN, "--json", "info"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["hostname"], "ctlhost");
    assert!(json["daemons"]["stord"]["error"].is_string());

    let out = run(base(&["--token", "wrong", "info"])).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: unauthorized: wrong or missing token"
    );

    let out = run(base(&["--token", TOKEN, "services"])).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: busy (106): "),
        "{}",
        stderr(&out)
    );
    // services restart NAME is host.restartService: through to init, which is not there.
    let out = run(base(&["--token", TOKEN, "services", "restart", "netd"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: busy (106): "),
        "{}",
        stderr(&out)
    );

    // The token from the environment, and --insecure instead of a pinned certificate.
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_cairnctl"))
                .args(["--url", &url, "--insecure", "info"])
                .env("CAIRN_TOKEN", TOKEN)
                .env(
                    "XDG_CONFIG_HOME",
                    std::env::temp_dir().join("cairnctl-test-no-config"),
                )
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // A certificate that is not the host's is refused.
    let other = TempDir::new("other");
    let made = apid::tls::load_or_generate(&other.0, vec!["localhost".into()]);
    assert!(made.is_ok());
    let other_cert = other.0.join("cert.pem").display().to_string();
    let out = run(vec![
        "--url".into(),
        url.clone(),
        "--ca-cert".into(),
        other_cert,
        "--token".into(),
        TOKEN.into(),
        "info".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));

    // vm: the spec's rules are hostd's (model::rules, as host.toml's): a well-shaped spec, bad
    // or good, gets as far as the bus, which this apid does not have (106); a mistyped value
    // never leaves cairnctl (clap refuses it).
    let out = run(base(&[
        "--token",
        TOKEN,
        "vm",
        "create",
        "deb",
        "--vcpus",
        "9",
        "--memory",
        "512M",
        "--kernel",
        "vmlinux",
        "--nic",
        "lan=01:00:00:00:00:01",
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: busy (106): "), "{err}");
    for args in [
        &[
            "vm",
            "create",
            "deb",
            "--memory",
            "1G",
            "--kernel",
            "/k",
            "--disk",
            "/d/deb.raw",
        ][..],
        &["vm", "list"],
        &["vm", "stop", "deb", "--timeout", "5"],
        &["vm", "console", "deb", "--log"],
    ] {
        let mut argv = vec!["--token", TOKEN];
        argv.extend_from_slice(args);
        let out = run(base(&argv)).await.unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).starts_with("error: busy (106): "),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = run(base(&[
        "--token",
        TOKEN,
        "vm",
        "stop",
        "deb",
        "--timeout",
        "30",
    ]))
    .await
    .unwrap();
    assert!(
        stderr(&out).contains("timeout_s = 30 is out of range 0..=20"),
        "{}",
        stderr(&out)
    );

    // update FILE uploads the bundle (under a name the host takes), then asks init, which is
    // not there; a URL goes to init as it is; a missing file never leaves cairnctl.
    let bundle = state.0.join("my bundle.update");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&bundle, &data).unwrap();
    let out = run(base(&[
        "--token",
        TOKEN,
        "update",
        &bundle.display().to_string(),
    ]))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("uploaded my_bundle.update: 3000000 bytes"),
        "{err}"
    );
    assert!(err.contains("error: busy (106): "), "{err}");
    assert_eq!(
        std::fs::read(state.0.join("uploads/my_bundle.update")).unwrap(),
        data
    );
    let out = run(base(&["--token", TOKEN, "update", "/nonexistent/b.update"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("opening /nonexistent/b.update"),
        "{}",
        stderr(&out)
    );
    let out = run(base(&[
        "--token",
        TOKEN,
        "update",
        "http://192.0.2.1/b.update",
    ]))
    .await
    .unwrap();
    assert!(
        stderr(&out).starts_with("error: busy (106): "),
        "{}",
        stderr(&out)
    );
    drop(stop);
}

#[test]
fn config_check_reports_vm_problems_with_positions() {
    let dir = TempDir::new("vmcheck");
    let file = dir.0.join("host.toml");
    std::fs::write(
        &file,
        "[host]\nhostname = \"h\"\n[host.management]\ninterface = \"eth0\"\ndhcp = true\n\
         [[network]]\nname = \"lan\"\nkind = \"bridged\"\n\
         [[vm]]\nname = \"x\"\nmemory = \"512M\"\nkernel = \"/k\"\n[[vm.nic]]\nnetwork = \"n9\"\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let out = cairnctl(&["config", "check", &path]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!("{path}:14:11: vm \"x\" nic 0 refers to unknown network \"n9\" (defined: lan)\n")
    );
}
