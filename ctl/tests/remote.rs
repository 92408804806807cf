//! Remotes and certificate pinning, as a user meets them: cairnctl run against two real apids
//! served over HTTPS on loopback, each with its own generated certificate, and a config
//! directory of the test's own.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use apid::bus::Bus;
use apid::http::{Limits, Server, Service};
use apid::methods::Api;
use testkit::TempDir;

const TOKEN: &str = "remote-test-token";

/// An apid with a certificate of its own: its URL and the certificate's fingerprint.
async fn serve(state: &Path, hostname: &str) -> (String, String, tokio::sync::oneshot::Sender<()>) {
    let config = testkit::api_host_config(hostname, "ctl", TOKEN);
    let tls = apid::tls::server_config(&config, state).unwrap();
    let server = Server::bind(SocketAddr::new(config.api.listen, 0), tls)
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}", server.local_addr().unwrap().port());
    let service = Service::new(
        Api::new(hostname.into(), Bus::new(None)),
        apid::token_digests(&config),
        Limits::default(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(service, async move {
        let _ = stopped.await;
    }));
    let pem = std::fs::read_to_string(apid::tls::generated_dir(state).join("cert.pem")).unwrap();
    let fp = model::token::pem_cert_fingerprint(&pem).unwrap();
    (url, fp, stop)
}

/// cairnctl with `config_home` as XDG_CONFIG_HOME, `env` added, no tty on stdin.
async fn cairnctl(config_home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairnctl"));
    cmd.args(args)
        .env_remove("CAIRN_TOKEN")
        .env_remove("CAIRN_URL")
        .env_remove("CAIRN_FINGERPRINT")
        .env("XDG_CONFIG_HOME", config_home)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// `cairnctl remote add NAME URL --token TOKEN --accept-fingerprint FP`.
async fn add(home: &Path, name: &str, url: &str, token: &str, fp: &str) -> Output {
    let args = [
        "remote",
        "add",
        name,
        url,
        "--token",
        token,
        "--accept-fingerprint",
        fp,
    ];
    cairnctl(home, &[], &args).await
}

/// cairnctl with a terminal on stdin, on which `typed` waits to be read.
fn on_a_terminal(config_home: &Path, typed: &str, args: &[&str]) -> Output {
    use std::io::Write as _;
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut master = std::fs::File::from(pty.master);
    master.write_all(typed.as_bytes()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairnctl"))
        .args(args)
        .env_remove("CAIRN_TOKEN")
        .env_remove("CAIRN_URL")
        .env_remove("CAIRN_FINGERPRINT")
        .env("XDG_CONFIG_HOME", config_home)
        .stdin(std::process::Stdio::from(pty.slave))
        .output()
        .unwrap();
    drop(master);
    out
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remotes_pin_the_certificate_on_first_use() {
    let (state_a, state_b, home) = (
        TempDir::new("ctl-remote-a"),
        TempDir::new("ctl-remote-b"),
        TempDir::new("ctl-remote-home"),
    );
    let (url_a, fp_a, _stop_a) = serve(&state_a.0, "hosta").await;
    let (url_b, fp_b, _stop_b) = serve(&state_b.0, "hostb").await;
    assert_ne!(fp_a, fp_b);
    let home = home.0.as_path();
    let config = home.join("cairn/config.toml");

    // Nothing to trust yet: the error names the server's fingerprint and what to do with it.
    let o = cairnctl(home, &[], &["--url", &url_a, "--token", TOKEN, "info"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains(&fp_a), "{}", err(&o));
    assert!(err(&o).contains("--accept-fingerprint"), "{}", err(&o));

    // remote add without a terminal to ask on: refused, with the fingerprint to check.
    let o = cairnctl(
        home,
        &[],
        &["remote", "add", "lab", &url_a, "--token", TOKEN],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains(&fp_a), "{}", err(&o));
    assert!(!config.exists(), "nothing saved");
    // Another fingerprint than the server's: refused.
    let o = add(home, "lab", &url_a, TOKEN, &fp_b).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("not added"), "{}", err(&o));
    // A wrong token: refused at once.
    let o = add(home, "lab", &url_a, "wrong", &fp_a).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("unauthorized"), "{}", err(&o));
    assert!(!config.exists(), "nothing saved");

    // The server's own fingerprint, in the colon-hex form openssl prints: added, the default.
    let colons: Vec<String> = fp_a.as_bytes()[7..]
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    let o = add(home, "lab", &url_a, TOKEN, &colons.join(":")).await;
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "added remote lab (the default)\n");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file holds tokens");
    let o = add(home, "other", &url_b, TOKEN, &fp_b).await;
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "added remote other\n");

    // On a terminal, remote add shows the fingerprint and asks: no keeps nothing, yes pins it.
    for (answer, ok) in [("n\n", false), ("y\n", true)] {
        let (h, a, url) = (home.to_path_buf(), answer.to_string(), url_a.clone());
        let o = tokio::task::spawn_blocking(move || {
            on_a_terminal(&h, &a, &["remote", "add", "tty", &url, "--token", TOKEN])
        })
        .await
        .unwrap();
        let e = err(&o);
        assert!(e.contains(&format!("fingerprint\n  {fp_a}\n")), "{e}");
        assert!(e.contains("Trust it? [y/N]"), "{e}");
        assert_eq!(o.status.success(), ok, "{answer:?}: {e}");
    }
    let o = cairnctl(home, &[], &["remote", "remove", "tty"]).await;
    assert!(o.status.success(), "{}", err(&o));

    // The default remote, another by --remote, with their pins; --json of remote list.
    let o = cairnctl(home, &[], &["info"]).await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("hostname    hosta\n"), "{}", out(&o));
    let o = cairnctl(home, &[], &["--remote", "other", "--json", "info"]).await;
    assert!(o.status.success(), "{}", err(&o));
    let json: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(json["hostname"], "hostb");
    let o = cairnctl(home, &[], &["remote", "list"]).await;
    assert!(o.status.success(), "{}", err(&o));
    let table = out(&o);
    assert!(table.starts_with("NAME   URL"), "{table}");
    assert!(
        table.contains(&format!("lab *  {url_a}  {fp_a}\n")),
        "{table}"
    );
    let o = cairnctl(home, &[], &["--json", "remote", "list"]).await;
    let json: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"name": "lab", "url": url_a, "fingerprint": fp_a, "default": true},
            {"name": "other", "url": url_b, "fingerprint": fp_b, "default": false},
        ])
    );
    // A URL that is a remote's is trusted by its pin; the token still comes from the user.
    let o = cairnctl(home, &[("CAIRN_TOKEN", TOKEN)], &["--url", &url_b, "info"]).await;
    assert!(o.status.success(), "{}", err(&o));
    // remote switch changes the default.
    let o = cairnctl(home, &[], &["remote", "switch", "other"]).await;
    assert!(o.status.success(), "{}", err(&o));
    let o = cairnctl(home, &[], &["info"]).await;
    assert!(out(&o).contains("hostname    hostb\n"), "{}", out(&o));

    // The host at lab's URL now presents another certificate: refused loudly, saying both
    // fingerprints and how to pin again; nothing is sent.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen(&url_a, &url_b, 1)).unwrap();
    let o = cairnctl(home, &[], &["--remote", "lab", "info"]).await;
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(e.contains("CERTIFICATE HAS CHANGED"), "{e}");
    assert!(e.contains(&format!("pinned:    {fp_a}")), "{e}");
    assert!(e.contains(&format!("presented: {fp_b}")), "{e}");
    assert!(e.contains("cairnctl remote remove lab"), "{e}");
    // As does a fingerprint given for a URL.
    let o = cairnctl(
        home,
        &[
            ("CAIRN_URL", &url_a),
            ("CAIRN_TOKEN", TOKEN),
            ("CAIRN_FINGERPRINT", &fp_b),
        ],
        &["info"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("CERTIFICATE HAS CHANGED"), "{}", err(&o));
    // CAIRN_URL, CAIRN_TOKEN and CAIRN_FINGERPRINT, as ci/appliance's env file sets them.
    let o = cairnctl(
        home,
        &[
            ("CAIRN_URL", &url_a),
            ("CAIRN_TOKEN", TOKEN),
            ("CAIRN_FINGERPRINT", &fp_a),
        ],
        &["info"],
    )
    .await;
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("hostname    hosta\n"), "{}", out(&o));

    // poweroff and reboot ask first; with nobody to ask, they need --yes and send nothing.
    for verb in ["poweroff", "reboot"] {
        let o = cairnctl(home, &[], &[verb]).await;
        assert_eq!(o.status.code(), Some(1));
        assert!(err(&o).contains("pass --yes"), "{verb}: {}", err(&o));
        // With --yes the request goes to init, which this apid does not have (106).
        let o = cairnctl(home, &[], &[verb, "--yes"]).await;
        assert_eq!(o.status.code(), Some(1));
        assert!(
            err(&o).starts_with("error: busy (106): "),
            "{verb}: {}",
            err(&o)
        );
    }

    // remove forgets it (and the default with it).
    let o = cairnctl(home, &[], &["remote", "remove", "other"]).await;
    assert!(o.status.success(), "{}", err(&o));
    let o = cairnctl(home, &[], &["info"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("which host?"), "{}", err(&o));
    let o = cairnctl(home, &[], &["--remote", "other", "info"]).await;
    assert!(err(&o).contains("no remote \"other\""), "{}", err(&o));
}
