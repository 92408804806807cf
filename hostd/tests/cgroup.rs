//! The containers' cgroup v2 code against the running kernel: groups, moving processes in,
//! freezing, usage, killing and removal, and the error for a limit whose controller the v2
//! hierarchy lacks. Runs as root on any host with a cgroup2 mount, under a scratch root
//! (`CAIRN_CGROUP_ROOT`) so it never touches a real `cairn.slice`.

// Included by path rather than used from the hostd library: the module is self-contained, and
// this way its own unit tests (mountinfo parsing, messages) run with `--test cgroup` too.
#[allow(dead_code)]
#[path = "../src/ct/cgroup/mod.rs"]
mod cgroup;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cgroup::{Cgroup, CgroupError};
use model::ct::Resources;
use testkit::skip;

fn v2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).map(PathBuf::from))?
    })
}

/// Removes the scratch root and anything left in it, even when an assertion failed midway.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut dirs = vec![self.0.clone()];
        let mut i = 0;
        while let Some(d) = dirs.get(i).cloned() {
            i += 1;
            if let Ok(entries) = std::fs::read_dir(&d) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::write(d.join("cgroup.kill"), "1");
        }
        std::thread::sleep(Duration::from_millis(50));
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn spawn(cmd: &str, args: &[&str]) -> Child {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn events(g: &Cgroup) -> String {
    std::fs::read_to_string(g.path().join("cgroup.events")).unwrap()
}

fn cpu_usec(g: &Cgroup) -> u64 {
    g.usage().unwrap().cpu_usec
}

fn lifecycle(root: &Path) {
    let g = Cgroup::create("t1").unwrap();
    assert_eq!(g.path(), root.join("cairn.slice/ct-t1"));
    assert!(g.path().is_dir());
    assert!(matches!(Cgroup::create("t1"), Err(CgroupError::Exists(_))));
    assert!(matches!(
        Cgroup::open("nope"),
        Err(CgroupError::NotFound(_))
    ));
    assert!(matches!(
        Cgroup::create("../x"),
        Err(CgroupError::BadName(_))
    ));
    assert_eq!(cgroup::names().unwrap(), ["t1"]);
    // No limits: must work on any host, with or without controllers.
    g.apply(&Resources::default()).unwrap();

    let mut sleeper = spawn("sleep", &["100"]);
    let mut spinner = spawn("sh", &["-c", "while :; do :; done"]);
    g.add_pid(sleeper.id()).unwrap();
    g.add_pid(spinner.id()).unwrap();
    let mut pids = g.pids().unwrap();
    pids.sort();
    let mut want = vec![sleeper.id(), spinner.id()];
    want.sort();
    assert_eq!(pids, want);

    // Re-adoption: a second handle on the same group sees the same processes.
    let again = Cgroup::open("t1").unwrap();
    assert_eq!(again.pids().unwrap().len(), 2);

    std::thread::sleep(Duration::from_millis(200));
    let usage = g.usage().unwrap();
    assert_eq!(usage.pids, 2, "{usage:?}");
    assert!(usage.cpu_usec > 10_000, "the spinner ran: {usage:?}");

    g.freeze(true).unwrap();
    assert!(events(&g).contains("frozen 1"), "{}", events(&g));
    let before = cpu_usec(&g);
    std::thread::sleep(Duration::from_millis(300));
    let frozen_delta = cpu_usec(&g) - before;
    assert!(
        frozen_delta < 5_000,
        "a frozen group used {frozen_delta} µs of CPU"
    );
    g.freeze(false).unwrap();
    assert!(events(&g).contains("frozen 0"), "{}", events(&g));
    let before = cpu_usec(&g);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        cpu_usec(&g) - before > 20_000,
        "the thawed spinner runs again"
    );

    g.kill_all().unwrap();
    assert!(g.pids().unwrap().is_empty());
    for child in [&mut sleeper, &mut spinner] {
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
    // Delegation: the container's root owns the group and may make sub-groups; the limits
    // stay root's. Sub-groups go with the group on removal.
    g.delegate(100_000, 100_000).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    let owner = |f: &str| std::fs::metadata(g.path().join(f)).unwrap().uid();
    assert_eq!(owner(""), 100_000);
    assert_eq!(owner("cgroup.procs"), 100_000);
    assert_eq!(owner("cgroup.freeze"), 0, "not delegated");
    std::fs::create_dir(g.path().join("inner")).unwrap();
    let path = g.path().to_path_buf();
    g.remove().unwrap();
    assert!(!path.exists(), "{} is left", path.display());
    assert!(cgroup::names().unwrap().is_empty());
}

fn limits() {
    let g = Cgroup::create("t2").unwrap();
    let r = Resources {
        cpu_limit: Some(50),
        ..Resources::default()
    };
    let has_cpu = std::fs::read_to_string(g.path().join("cgroup.controllers"))
        .unwrap()
        .split_whitespace()
        .any(|c| c == "cpu");
    match g.apply(&r) {
        Ok(()) => {
            assert!(has_cpu);
            let max = std::fs::read_to_string(g.path().join("cpu.max")).unwrap();
            assert_eq!(max.trim(), "50000 100000");
        }
        Err(e) => {
            assert!(!has_cpu, "{e}");
            let msg = e.to_string();
            assert!(
                msg.starts_with(
                    "cpu_limit needs the cgroup v2 cpu controller, which this kernel's v2 \
                     hierarchy does not offer"
                ),
                "{msg}"
            );
            eprintln!("as expected here: {msg}");
        }
    }
    // Where the hierarchy has every controller (the appliance; run this test there by hand):
    // every limit, written and read back, and changed live.
    if cgroup::controllers_available() {
        let all = Resources {
            cpu_limit: Some(25),
            cpu_weight: Some(300),
            cpuset: Some("0".into()),
            memory: Some(64 << 20),
            swap: Some(0),
            pids: Some(100),
            io_weight: Some(200),
        };
        let file =
            |f: &str| std::fs::read_to_string(g.path().join(f)).map(|s| s.trim().to_string());
        let have = std::fs::read_to_string(g.path().join("cgroup.controllers")).unwrap();
        let mut expect = vec![
            ("cpu.max", "25000 100000"),
            ("cpu.weight", "300"),
            ("memory.max", "67108864"),
            ("pids.max", "100"),
        ];
        let mut r = all.clone();
        if have.contains("cpuset") {
            expect.push(("cpuset.cpus", "0"));
        } else {
            r.cpuset = None;
        }
        if g.path().join("memory.swap.max").exists() {
            expect.push(("memory.swap.max", "0"));
        } else {
            r.swap = None;
        }
        if have.contains("io") && g.path().join("io.weight").exists() {
            expect.push(("io.weight", "default 200"));
        } else {
            r.io_weight = None;
        }
        g.apply(&r).unwrap();
        for (f, want) in expect {
            assert_eq!(file(f).unwrap(), want, "{f}");
        }
        // Live change of one field leaves the others alone.
        g.apply(&Resources {
            cpu_limit: Some(200),
            ..Resources::default()
        })
        .unwrap();
        assert_eq!(file("cpu.max").unwrap(), "200000 100000");
        assert_eq!(file("cpu.weight").unwrap(), "300");
        let u = g.usage().unwrap();
        assert_eq!((u.pids, u.oom_kills), (0, 0), "{u:?}");
        eprintln!("every limit applied: {r:?}");
    }
    // Out of range: refused before the kernel sees it.
    let bad = Resources {
        cpu_weight: Some(0),
        ..Resources::default()
    };
    let e = g.apply(&bad).unwrap_err();
    assert!(
        e.to_string().contains("cpu_weight 0 is out of range"),
        "{e}"
    );
    g.remove().unwrap();
}

#[test]
fn cgroup_v2_groups_for_containers() {
    const TEST: &str = "cgroup_v2_groups_for_containers";
    if !testkit::is_root() {
        return skip(TEST, "needs root to make cgroups");
    }
    let Some(mount) = v2_mount() else {
        return skip(TEST, "no cgroup2 hierarchy is mounted");
    };
    let root = mount.join(format!("cairn-test-{}", std::process::id()));
    std::fs::create_dir(&root).unwrap();
    // The scratch root gets what the hierarchy has, as the real root (the mount) has it all.
    let have = std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    for c in have.split_whitespace() {
        if ["cpu", "cpuset", "memory", "pids", "io"].contains(&c) {
            let _ = std::fs::write(mount.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
    let _scratch = Scratch(root.clone());
    // SAFETY: set once, before this test starts any thread; the unit tests running beside it
    // never read the environment.
    unsafe { std::env::set_var(cgroup::ROOT_ENV, &root) };
    eprintln!(
        "v2 root {}: controllers available: {}",
        root.display(),
        cgroup::controllers_available()
    );
    lifecycle(&root);
    limits();
}
