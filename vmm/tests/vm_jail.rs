//! The VMM jail (vmm::jail) and its seccomp filter (vmm::seccomp) in real
//! processes. Needs root (mounts, mknod, namespaces).
//!
//! Entering a jail and installing seccomp are one-way, so they happen in a re-executed copy of
//! this test binary, never in the test process. The copy runs its scenario from a constructor
//! in `.init_array`, before libtest's main: `jail::enter` insists on a single-threaded
//! process (namespaces and capabilities are per thread), and libtest runs every test on a
//! thread of its own. The child prints one line (`jail ok`, `allowed ok` or `FAIL: …`) and
//! exits; the parent test checks the line and how the child ended.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::{TempDir, skip};
use vmm::jail::{self, DEV_KVM, DEV_NET_TUN, JailError};
use vmm::seccomp;

/// Set in the re-executed child: which scenario to run.
const CHILD_ENV: &str = "CAIRN_JAIL_CHILD";
/// The prepared jail root, for the child.
const ROOT_ENV: &str = "CAIRN_JAIL_ROOT";
/// A file outside the root the child must not reach.
const SECRET_ENV: &str = "CAIRN_JAIL_SECRET";
/// Set when the host has a usable /dev/kvm, so the child also opens the jail's node.
const KVM_ENV: &str = "CAIRN_JAIL_KVM";

const KERNEL: &[u8] = b"cairn jail test kernel\n";

// ---------------------------------------------------------------- child side

#[used]
#[unsafe(link_section = ".init_array")]
static CHILD_ENTRY: extern "C" fn() = child_entry;

/// Runs before main in every start of this binary; does nothing unless CHILD_ENV is set.
extern "C" fn child_entry() {
    let Some(scenario) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let scenario = scenario.to_string_lossy().into_owned();
    let code = match std::panic::catch_unwind(|| child(&scenario)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            println!("FAIL: {e}");
            1
        }
        Err(_) => {
            println!("FAIL: panicked");
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

fn expect_errno<T: std::fmt::Debug>(
    what: &str,
    r: Result<T, std::io::Error>,
    errno: i32,
) -> Result<(), String> {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        other => Err(format!(
            "{what}: got {other:?}, want {}",
            std::io::Error::from_raw_os_error(errno)
        )),
    }
}

fn child(scenario: &str) -> Result<(), String> {
    let root = env(ROOT_ENV)?;
    match scenario {
        "hide" => child_hide(Path::new(&root)),
        "seccomp" => child_seccomp(Path::new(&root)),
        other => Err(format!("unknown scenario {other:?}")),
    }
}

fn child_hide(root: &Path) -> Result<(), String> {
    let secret = env(SECRET_ENV)?;
    jail::enter(root).map_err(|e| format!("enter: {e}"))?;

    expect_errno(
        &format!("opening {secret} (outside the root)"),
        std::fs::File::open(&secret),
        libc::ENOENT,
    )?;
    let got = std::fs::read("/kernel").map_err(|e| format!("reading /kernel: {e}"))?;
    if got != KERNEL {
        return Err(format!("/kernel holds {got:?}"));
    }
    expect_errno(
        "opening the read-only /kernel for writing",
        std::fs::OpenOptions::new().write(true).open("/kernel"),
        libc::EROFS,
    )?;
    expect_errno(
        "stat /proc (must not be mounted)",
        std::fs::symlink_metadata("/proc"),
        libc::ENOENT,
    )?;
    let top = std::fs::metadata("/").map_err(|e| format!("stat /: {e}"))?;
    let up = std::fs::metadata("/..").map_err(|e| format!("stat /..: {e}"))?;
    if (top.dev(), top.ino()) != (up.dev(), up.ino()) {
        return Err("/.. is not /".into());
    }
    let mut names: Vec<String> = std::fs::read_dir("/..")
        .map_err(|e| format!("listing /..: {e}"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names != ["dev", "kernel"] {
        return Err(format!("/ holds {names:?}, want [dev, kernel]"));
    }
    let kvm = std::fs::metadata("/dev/kvm").map_err(|e| format!("stat /dev/kvm: {e}"))?;
    if !kvm.file_type().is_char_device() || kvm.rdev() != libc::makedev(10, 232) {
        return Err("/dev/kvm is not char 10:232".into());
    }

    jail::drop_privileges().map_err(|e| format!("drop_privileges: {e}"))?;
    let caps = jail::capabilities().map_err(|e| format!("capabilities: {e}"))?;
    if caps != jail::CapSets::default() {
        return Err(format!("capabilities left: {caps:?}"));
    }
    let eperm = |what: &str, r: nix::Result<()>| {
        expect_errno(what, r.map_err(std::io::Error::from), libc::EPERM)
    };
    eperm(
        "mount tmpfs without CAP_SYS_ADMIN",
        nix::mount::mount(
            Some("none"),
            "/dev",
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        ),
    )?;
    eperm(
        "mknod without CAP_MKNOD",
        nix::sys::stat::mknod(
            "/kvm2",
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            libc::makedev(10, 232),
        ),
    )?;
    eperm("chroot without CAP_SYS_CHROOT", nix::unistd::chroot("/"))?;
    // Still uid 0, so owner bits apply: the VM's files stay usable without capabilities.
    std::fs::read("/kernel").map_err(|e| format!("reading /kernel without caps: {e}"))?;
    if std::env::var_os(KVM_ENV).is_some() {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(|e| format!("opening /dev/kvm in the jail without caps: {e}"))?;
    }
    println!("jail ok");
    Ok(())
}

static KICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_kick(_: libc::c_int) {
    KICKED.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn child_seccomp(root: &Path) -> Result<(), String> {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::Ordering;

    jail::enter(root).map_err(|e| format!("enter: {e}"))?;
    jail::drop_privileges().map_err(|e| format!("drop_privileges: {e}"))?;
    // The vCPU kick handler is installed before the filter (rt_sigaction is not allowed).
    // SAFETY: a handler that only stores to an atomic.
    let prev =
        unsafe { libc::signal(libc::SIGRTMIN(), on_kick as *const () as libc::sighandler_t) };
    if prev == libc::SIG_ERR {
        return Err("installing the SIGRTMIN handler failed".into());
    }
    let prog = seccomp::vmm_filter().map_err(|e| format!("vmm_filter: {e}"))?;
    seccomp::install(prog).map_err(|e| format!("install: {e}"))?;

    eprintln!("vm_jail child: stderr works under the filter");
    // A named thread (PR_SET_NAME), kicked with tgkill like a vCPU in KVM_RUN, then joined.
    let vcpu = std::thread::Builder::new()
        .name("vcpu0".into())
        .spawn(|| {
            while !KICKED.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            42
        })
        .map_err(|e| format!("spawning a thread: {e}"))?;
    // SAFETY: the thread is alive until joined below.
    let rc = unsafe { libc::pthread_kill(vcpu.as_pthread_t(), libc::SIGRTMIN()) };
    if rc != 0 {
        return Err(format!(
            "pthread_kill: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if vcpu.join().map_err(|_| "the thread panicked")? != 42 {
        return Err("the thread returned something else".into());
    }

    // SAFETY: every call below is a plain syscall on fds this block creates and closes and on
    // a page it maps and unmaps itself; each pointer passed is to a local that outlives the
    // call, with the size the kernel reads or writes (8-byte eventfd values, epoll_event
    // arrays of the length given, a timespec).
    unsafe {
        let efd = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
        if efd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        let one = 1u64;
        if libc::write(efd, (&raw const one).cast(), 8) != 8 {
            return Err(format!(
                "eventfd write: {}",
                std::io::Error::last_os_error()
            ));
        }
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if ep < 0 {
            return Err(format!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        if libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &raw mut ev) != 0 {
            return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
        }
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let n = libc::epoll_wait(ep, out.as_mut_ptr(), 4, 0);
        if n != 1 {
            return Err(format!(
                "epoll_wait gave {n}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut val = 0u64;
        if libc::read(efd, (&raw mut val).cast(), 8) != 8 || val != 1 {
            return Err("eventfd read".into());
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) != 0 {
            return Err("clock_gettime".into());
        }
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if page == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        page.cast::<u8>().write(1);
        if libc::munmap(page, 4096) != 0 {
            return Err("munmap".into());
        }
        libc::close(ep);
        libc::close(efd);
    }

    println!("allowed ok");
    let _ = std::io::stdout().flush();
    // Not on the list: the kernel must kill the whole process with SIGSYS here.
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    Err(format!("socket() was not killed, it returned {fd}"))
}

// ---------------------------------------------------------------- parent side

/// Runs this binary again as the child for `scenario`.
fn run_child(test: &str, scenario: &str, envs: &[(&str, &Path)]) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture"])
        .env(CHILD_ENV, scenario);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if kvm_ioctls::Kvm::new().is_ok() {
        cmd.env(KVM_ENV, "1");
    }
    let out = cmd.output().expect("re-running the test binary");
    eprintln!(
        "child {scenario}: {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails loudly if the scenario constructor did not take the child over.
fn not_in_child() {
    assert!(
        std::env::var_os(CHILD_ENV).is_none(),
        "the child ran the test function: the .init_array constructor did not run"
    );
}

/// Tears the jail root down also when a test panics (TempDir's remove_dir_all cannot remove
/// mount points).
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        if let Err(e) = jail::teardown_root(&self.0) {
            eprintln!("teardown {}: {e}", self.0.display());
        }
    }
}

/// A scratch dir with `kernel` (holding KERNEL) and `secret` outside `root`, and `root`
/// prepared with the kernel bound read-only and /dev/kvm.
fn jail_fixture(name: &str) -> (TempDir, Root) {
    let dir = TempDir::new(name);
    std::fs::write(dir.path().join("kernel"), KERNEL).unwrap();
    std::fs::write(dir.path().join("secret"), b"secret").unwrap();
    let root = Root(dir.path().join("root"));
    jail::prepare_root(
        &root.0,
        &[(&dir.path().join("kernel"), "/kernel", true)],
        &[DEV_KVM],
    )
    .unwrap_or_else(|e| panic!("prepare_root: {e}"));
    (dir, root)
}

fn mounts_under(root: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| Path::new(mp).starts_with(root))
        .count()
}

#[test]
fn jail_hides_files_outside_root() {
    let test = "vm_jail::jail_hides_files_outside_root";
    not_in_child();
    if !testkit::is_root() {
        return skip(test, "needs root (mounts, mknod, namespaces)");
    }
    let (dir, root) = jail_fixture("vm-jail-hide");
    let out = run_child(
        "jail_hides_files_outside_root",
        "hide",
        &[
            (ROOT_ENV, &root.0),
            (SECRET_ENV, &dir.path().join("secret")),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "jail ok"),
        "child failed: {:?}: {stdout}",
        out.status
    );
    // The child's mounts lived in its own namespace: the host sees only the one bind.
    assert_eq!(mounts_under(&root.0), 1);
    assert!(
        std::fs::read_dir(&root.0).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("old-root")),
        "the old-root directory was left in the jail root"
    );
}

#[test]
fn seccomp_kills_on_forbidden_syscall() {
    let test = "vm_jail::seccomp_kills_on_forbidden_syscall";
    not_in_child();
    if !testkit::is_root() {
        return skip(test, "needs root (mounts, mknod, namespaces)");
    }
    let (_dir, root) = jail_fixture("vm-jail-seccomp");
    let out = run_child(
        "seccomp_kills_on_forbidden_syscall",
        "seccomp",
        &[(ROOT_ENV, &root.0)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == "allowed ok"),
        "the allowed syscalls did not all pass: {:?}: {stdout}",
        out.status
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "the child was not killed by SIGSYS: {:?}: {stdout}",
        out.status
    );
}

#[test]
fn prepare_and_teardown_root() {
    let test = "vm_jail::prepare_and_teardown_root";
    not_in_child();
    if !testkit::is_root() {
        return skip(test, "needs root (mounts, mknod)");
    }
    let dir = TempDir::new("vm-jail-prepare");
    let kernel = dir.path().join("kernel.src");
    let disk = dir.path().join("disk0.src");
    std::fs::write(&kernel, KERNEL).unwrap();
    std::fs::write(&disk, b"disk").unwrap();
    let root = Root(dir.path().join("jails").join("vm1"));
    let files: [(&Path, &str, bool); 2] = [(&kernel, "/kernel", true), (&disk, "disk0", false)];
    let devices = [DEV_KVM, DEV_NET_TUN];
    for _ in 0..2 {
        jail::prepare_root(&root.0, &files, &devices)
            .unwrap_or_else(|e| panic!("prepare_root: {e}"));
    }

    let meta = std::fs::metadata(&root.0).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
    let mut found = Vec::new();
    let mut stack = vec![root.0.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            found.push(
                p.strip_prefix(&root.0)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    found.sort();
    assert_eq!(
        found,
        [
            "dev",
            "dev/kvm",
            "dev/net",
            "dev/net/tun",
            "disk0",
            "kernel"
        ]
    );
    for (name, minor) in [("dev/kvm", 232), ("dev/net/tun", 200)] {
        let m = std::fs::symlink_metadata(root.0.join(name)).unwrap();
        assert!(
            m.file_type().is_char_device(),
            "{name} is not a char device"
        );
        assert_eq!(m.rdev(), libc::makedev(10, minor), "{name}");
        assert_eq!(m.permissions().mode() & 0o7777, 0o600, "{name}");
    }
    // Binds, not copies; once each even after two prepares.
    assert_eq!(std::fs::read(root.0.join("kernel")).unwrap(), KERNEL);
    assert_eq!(mounts_under(&root.0), 2);
    let ro = std::fs::OpenOptions::new()
        .write(true)
        .open(root.0.join("kernel"));
    assert_eq!(
        ro.err().and_then(|e| e.raw_os_error()),
        Some(libc::EROFS),
        "the read-only bind took a write"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .mode(0o600)
        .open(root.0.join("disk0"))
        .unwrap()
        .write_all(b"DISK")
        .unwrap();
    assert_eq!(std::fs::read(&disk).unwrap(), b"DISK");

    // Errors name the path and the operation.
    let missing = dir.path().join("missing");
    let e = jail::prepare_root(&root.0, &[(&missing, "initrd", true)], &[]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("stat") && msg.contains(&*missing.to_string_lossy()),
        "{msg}"
    );
    let e = jail::prepare_root(&root.0, &[(&kernel, "../escape", true)], &[]).unwrap_err();
    assert!(matches!(e, JailError::BadName { .. }), "{e}");

    for _ in 0..2 {
        jail::teardown_root(&root.0).unwrap_or_else(|e| panic!("teardown_root: {e}"));
    }
    assert!(!root.0.exists(), "the root is still there");
    assert_eq!(mounts_under(&root.0), 0);
    assert_eq!(std::fs::read(&kernel).unwrap(), KERNEL);
    assert_eq!(std::fs::read(&disk).unwrap(), b"DISK");
}
