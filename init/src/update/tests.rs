//! The bundle check against bundles made here with the tar crate, signed (when signed) by the
//! stock minisign tool (ci/deps), as a user would.

use std::path::{Path, PathBuf};
use std::process::Command;

use model::update::{MANIFEST, Manifest, SIGNATURE};
use sha2::{Digest, Sha256};

use super::*;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("cairn-update-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("parts")).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha(data: &[u8]) -> String {
    model::hex(&Sha256::digest(data))
}

/// A bundle of `files` (name, data) in that order, with `manifest` first and `sig` second.
fn bundle(dir: &Path, manifest: &str, sig: Option<&str>, files: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join("b.update");
    let mut tar = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data).unwrap();
    };
    add(MANIFEST, manifest.as_bytes());
    if let Some(s) = sig {
        add(SIGNATURE, s.as_bytes());
    }
    for (name, data) in files {
        add(name, data);
    }
    tar.finish().unwrap();
    path
}

fn parts() -> (Manifest, Vec<(&'static str, Vec<u8>)>) {
    let files = vec![
        ("vmlinuz", b"kernel".repeat(100)),
        ("initrd.img", vec![9u8; 5000]),
    ];
    let manifest = Manifest {
        version: "0.2.0".into(),
        parts: files
            .iter()
            .map(|(n, d)| (n.to_string(), d.len() as u64, sha(d)))
            .collect(),
    };
    (manifest, files)
}

fn refs<'a>(files: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    files.iter().map(|(n, d)| (*n, d.as_slice())).collect()
}

#[test]
fn a_whole_bundle_is_taken_apart() {
    let s = Scratch::new("ok");
    let (m, files) = parts();
    let b = bundle(&s.0, &m.render(), None, &refs(&files));
    assert_eq!(bundle::unpack(&b, &s.0.join("parts"), None).unwrap(), m);
    assert_eq!(
        std::fs::read(s.0.join("parts/initrd.img")).unwrap(),
        files[1].1
    );
}

#[test]
fn a_flipped_byte_a_missing_part_or_a_stranger_is_refused() {
    let s = Scratch::new("bad");
    let (m, files) = parts();
    let mut flipped = files.clone();
    flipped[1].1[100] ^= 1;
    type Case<'a> = (Vec<(&'a str, &'a [u8])>, &'a str);
    let cases: Vec<Case> = vec![
        (refs(&flipped), "initrd.img's sha256"),
        (refs(&files[..1]), "initrd.img is missing"),
        (
            [refs(&files), vec![("evil", b"x".as_slice())]].concat(),
            "\"evil\" is not in its MANIFEST",
        ),
    ];
    for (content, want) in cases {
        let b = bundle(&s.0, &m.render(), None, &content);
        let e = bundle::unpack(&b, &s.0.join("parts"), None).unwrap_err();
        assert!(
            matches!(&e, UpdateError::Invalid(t) if t.contains(want)),
            "{e} / {want}"
        );
    }
    let b = bundle(&s.0, "cairn-update 1\n", None, &refs(&files));
    assert!(bundle::unpack(&b, &s.0.join("parts"), None).is_err());
    std::fs::write(s.0.join("junk"), vec![1u8; 3000]).unwrap();
    assert!(bundle::unpack(&s.0.join("junk"), &s.0.join("parts"), None).is_err());
}

/// minisign -G/-S, the stock tool: returns (public key line, signature of `text`).
fn minisign(dir: &Path, tag: &str, text: &str) -> (String, String) {
    let (public, secret) = (
        dir.join(format!("{tag}.pub")),
        dir.join(format!("{tag}.key")),
    );
    let ok = Command::new("minisign")
        .args(["-G", "-W", "-f", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .output()
        .expect("minisign (ci/deps)")
        .status
        .success();
    assert!(ok, "minisign -G");
    let m = dir.join(format!("{tag}.MANIFEST"));
    std::fs::write(&m, text).unwrap();
    let ok = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(&secret)
        .arg("-m")
        .arg(&m)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "minisign -S");
    let key = std::fs::read_to_string(&public)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let sig = std::fs::read_to_string(dir.join(format!("{tag}.MANIFEST.minisig"))).unwrap();
    (key, sig)
}

#[test]
fn a_pinned_key_takes_its_own_signature_only() {
    let s = Scratch::new("sig");
    let (m, files) = parts();
    let text = m.render();
    let (key, sig) = minisign(&s.0, "ours", &text);
    let (_, theirs) = minisign(&s.0, "theirs", &text);
    let signed = bundle(&s.0, &text, Some(&sig), &refs(&files));
    assert_eq!(
        bundle::unpack(&signed, &s.0.join("parts"), Some(&key)).unwrap(),
        m
    );
    // Without a pinned key the signature is not needed (nor checked).
    assert!(bundle::unpack(&signed, &s.0.join("parts"), None).is_ok());
    for (sig, want) in [
        (None, "not signed"),
        (Some(theirs.as_str()), "not the pinned key's"),
    ] {
        let b = bundle(&s.0, &text, sig, &refs(&files));
        let e = bundle::unpack(&b, &s.0.join("parts"), Some(&key)).unwrap_err();
        assert!(
            matches!(&e, UpdateError::Invalid(t) if t.contains(want)),
            "{e}"
        );
    }
    // A signature of the manifest does not cover another manifest.
    let other = Manifest {
        version: "6.6.6".into(),
        ..m.clone()
    }
    .render();
    let b = bundle(&s.0, &other, Some(&sig), &refs(&files));
    assert!(bundle::unpack(&b, &s.0.join("parts"), Some(&key)).is_err());
}

#[test]
fn the_slot_comes_from_the_boot_menu() {
    assert_eq!(
        slot_from_cmdline("quiet cairn.slot=b").as_deref(),
        Some("b")
    );
    assert_eq!(slot_from_cmdline("cairn.slot=c"), None);
    assert_eq!(slot_from_cmdline("quiet retain_initrd"), None);
    assert_eq!((other("a"), other("b")), ("b", "a"));
    assert_eq!((partition_of("a"), partition_of("b")), (3, 4));
}

#[test]
fn bundles_come_over_http_or_from_the_state_partition_only() {
    let scratch = Scratch::new("source");
    let state = scratch.0.join("state");
    std::fs::create_dir_all(state.join("apid/uploads")).unwrap();
    let upload = state.join("apid/uploads/next.update");
    std::fs::write(&upload, b"bundle").unwrap();
    let outside = scratch.0.join("elsewhere.update");
    std::fs::write(&outside, b"bundle").unwrap();
    assert_eq!(
        Source::parse("http://h/b.update", &state).unwrap(),
        Source::Http("http://h/b.update".into())
    );
    assert_eq!(
        Source::parse(&format!("file://{}", upload.display()), &state).unwrap(),
        Source::File(upload.canonicalize().unwrap())
    );
    for bad in [
        format!("file://{}", outside.display()),
        format!(
            "file://{}/apid/uploads/../../elsewhere.update",
            state.display()
        ),
        format!("file://{}/apid/uploads", state.display()),
        "file:///etc/passwd".to_string(),
        "ftp://h/b.update".to_string(),
    ] {
        let e = Source::parse(&bad, &state).unwrap_err();
        assert!(matches!(e, UpdateError::Invalid(_)), "{bad}: {e}");
    }
}
