//! Files into and out of a container under the real `init --sandbox` with hostd on a private
//! bus: Host1's FileOpenWrite/FileCommit/FileOpenRead hand over descriptors opened inside the
//! container's root (stopped: its overlay mounted for the copy; running: its init's root).
//! A template crafted to escape — symlinks to /, to ../../.., to an absolute host path, a
//! symlinked parent directory — stays inside; /proc magic links and `..` are refused; a new
//! file belongs to the container's (id-mapped) root, or to the uid asked for.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use common::{TempDir, containers_possible, skip};
use model::dbus::{CairnError, Host1Proxy};
use testkit::sandbox::bin_dir;

const TEST: &str = "sandbox_files::push_pull_inside_the_root_only";

async fn push(host: &Host1Proxy<'_>, ct: &str, path: &str, mode: u32, uid: u32, bytes: &[u8]) {
    let (fd, token) = host
        .file_open_write(ct, path, mode, uid, uid)
        .await
        .unwrap_or_else(|e| panic!("file_open_write({ct}, {path}): {e}"));
    let mut f = std::fs::File::from(OwnedFd::from(fd));
    f.write_all(bytes).unwrap();
    drop(f);
    let size = host.file_commit(&token).await.expect("file_commit");
    assert_eq!(size, bytes.len() as u64);
}

async fn pull(host: &Host1Proxy<'_>, ct: &str, path: &str) -> Result<(Vec<u8>, u32), CairnError> {
    let (fd, mode, size) = host.file_open_read(ct, path).await?;
    let mut bytes = Vec::new();
    std::fs::File::from(OwnedFd::from(fd))
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(bytes.len() as u64, size);
    Ok((bytes, mode))
}

async fn sh(host: &Host1Proxy<'_>, ct: &str, script: &str) -> String {
    let (code, out, err) = host
        .exec(ct, vec!["/bin/sh".into(), "-c".into(), script.into()], 10)
        .await
        .unwrap_or_else(|e| panic!("exec {script}: {e}"));
    assert_eq!(code, 0, "{script}: {err}");
    out
}

#[tokio::test(flavor = "current_thread")]
async fn push_pull_inside_the_root_only() {
    if !containers_possible(TEST) {
        return;
    }
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(why) => return skip(TEST, &why),
    };
    let scratch = TempDir::new("hostd-sbx-files");
    // What a template must never reach: a host directory with a secret in it.
    let host_dir = scratch.0.join("host-only");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("secret"), b"HOST").unwrap();
    let host_dir_s = host_dir.to_str().unwrap().to_string();

    // A crafted template: links that would lead out of any root resolved by string joins.
    let root = scratch.0.join("bb");
    testkit::template::busybox_rootfs(&root).expect("busybox rootfs");
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
    link("/", "up");
    link("../../../../../../../..", "etc/dots");
    link(&host_dir_s, "abs");
    link(&format!("../../../../../../../..{host_dir_s}"), "sneaky");
    link("/proc/1/root", "magic");
    std::fs::write(root.join("etc/in-guest"), b"GUEST").unwrap();
    let tarball = scratch.0.join("crafted.tar");
    let digest = testkit::template::tar_dir(&root, &tarball).expect("tar");
    std::fs::remove_dir_all(&root).unwrap();

    let (mut sb, host) =
        common::sandbox_with_template("files", "10.62.0", &bins, "crafted", &tarball, &digest)
            .await;
    common::make_container(
        &sb,
        &host,
        r#"{"name":"f1","template":"crafted","command":["/bin/sh","-c","sleep 600"]}"#,
        None,
    )
    .await;

    // No such container, bad paths, directories: clear errors, nothing made.
    assert!(matches!(
        host.file_open_read("nosuch", "/etc/x").await,
        Err(CairnError::NotFound(_))
    ));
    for bad in ["etc/x", "/etc/../x", "/etc/", "/"] {
        match host.file_open_write("f1", bad, 0o644, 0, 0).await {
            Err(CairnError::InvalidArgs(m)) => assert!(m.contains("absolute"), "{bad}: {m}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    match pull(&host, "f1", "/etc").await {
        Err(CairnError::InvalidArgs(m)) => {
            assert!(m.contains("/etc") && m.contains("directory"), "{m}")
        }
        other => panic!("/etc: {other:?}"),
    }
    match pull(&host, "f1", "/etc/nothing-here").await {
        Err(CairnError::NotFound(m)) => assert!(m.contains("/etc/nothing-here"), "{m}"),
        other => panic!("missing: {other:?}"),
    }

    // Stopped: the overlay is mounted for the copy; the file is there at the next start.
    push(&host, "f1", "/etc/pushed", 0o751, 0, b"\x00\x01binary\xff").await;
    push(&host, "f1", "/etc/owned", 0o600, 1000, b"x").await;
    let (bytes, mode) = pull(&host, "f1", "/etc/pushed").await.unwrap();
    assert_eq!(
        (bytes.as_slice(), mode),
        (&b"\x00\x01binary\xff"[..], 0o751)
    );

    // Every crafted link resolves inside the container's root.
    for through in ["/up/etc/in-guest", "/etc/dots/etc/in-guest"] {
        let (bytes, _) = pull(&host, "f1", through)
            .await
            .unwrap_or_else(|e| panic!("{through}: {e}\n{}", sb.log()));
        assert_eq!(bytes, b"GUEST", "{through}");
    }
    for (escape, why) in [
        ("/abs/secret", "absolute link"),
        ("/sneaky/secret", "dots link"),
    ] {
        match pull(&host, "f1", escape).await {
            Err(CairnError::NotFound(_)) => {}
            other => panic!("{why} {escape}: {other:?}"),
        }
        assert!(
            host.file_open_write("f1", escape, 0o644, 0, 0)
                .await
                .is_err(),
            "{why} {escape} written"
        );
    }
    // Through a symlinked parent: the file lands in the container's /, not the host's.
    push(&host, "f1", "/up/landed", 0o644, 0, b"in").await;
    assert!(!std::path::Path::new("/landed").exists());
    assert_eq!(std::fs::read(host_dir.join("secret")).unwrap(), b"HOST");
    assert_eq!(std::fs::read_dir(&host_dir).unwrap().count(), 1);

    // An aborted write leaves nothing, not even its temporary.
    let (fd, token) = host
        .file_open_write("f1", "/etc/aborted", 0o644, 0, 0)
        .await
        .unwrap();
    std::fs::File::from(OwnedFd::from(fd))
        .write_all(b"half")
        .unwrap();
    assert!(host.file_abort(&token).await.unwrap());
    assert!(matches!(
        host.file_commit(&token).await,
        Err(CairnError::NotFound(_))
    ));

    // Running: what was pushed while stopped is there, owned by the container's root (0 inside,
    // its id-mapped host uid outside) or by the uid asked for.
    host.start_container("f1")
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", sb.log()));
    let stat = sh(
        &host,
        "f1",
        "stat -c '%u %g %a' /etc/pushed /etc/owned /landed; ls -a /etc",
    )
    .await;
    let mut lines = stat.lines();
    assert_eq!(lines.next(), Some("0 0 751"), "{stat}");
    assert_eq!(lines.next(), Some("1000 1000 600"), "{stat}");
    assert_eq!(lines.next(), Some("0 0 644"), "{stat}");
    assert!(
        !stat.contains(".cairn-") && !stat.contains("aborted"),
        "{stat}"
    );
    assert_eq!(
        sh(&host, "f1", "od -An -tx1 /etc/pushed")
            .await
            .split_whitespace()
            .collect::<String>(),
        "000162696e617279ff"
    );

    // Written while it runs: the container sees it at once; read back what it wrote.
    push(&host, "f1", "/etc/dots/tmp/live", 0o640, 0, b"live").await;
    assert_eq!(
        sh(&host, "f1", "cat /tmp/live; stat -c %a /tmp/live").await,
        "live640\n"
    );
    sh(
        &host,
        "f1",
        "printf made-inside > /tmp/inside; chmod 0704 /tmp/inside",
    )
    .await;
    let (bytes, mode) = pull(&host, "f1", "/up/tmp/inside").await.unwrap();
    assert_eq!((bytes.as_slice(), mode), (&b"made-inside"[..], 0o704));

    // A /proc magic link or mount is no way out, whether the template or the path names it.
    for escape in [
        "/magic/etc/hostname",
        "/proc/1/root/etc/hostname",
        "/proc/self/environ",
    ] {
        match pull(&host, "f1", escape).await {
            Err(CairnError::InvalidArgs(_)) => {}
            other => panic!("{escape}: {other:?}"),
        }
    }
    // A link the container makes at run time is resolved inside it too.
    sh(&host, "f1", &format!("ln -s {host_dir_s} /tmp/made-link")).await;
    assert!(matches!(
        pull(&host, "f1", "/tmp/made-link/secret").await,
        Err(CairnError::NotFound(_))
    ));

    host.stop_container("f1", 0).await.expect("stop");
    host.delete_container("f1").await.expect("delete");
    sb.stop();
}
