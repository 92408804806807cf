//! Interactive exec through the real API under `init --sandbox`: cairnctl, run on a
//! pseudo-terminal by Python in the sandbox's network namespace → apid's /streams/exec
//! WebSocket → hostd's exec on a pty in a busybox container. The size outside is `stty size`
//! inside (at the start and after a resize), Ctrl-C interrupts a sleep inside, `exit 7` is
//! cairnctl's status; an upgrade without a token is 401 before any WebSocket, an unknown stream
//! 404, a plain GET 426.

use std::time::Duration;

use testkit::sandbox::{Sandbox, bin_dir, sandbox_possible};
use testkit::{TempDir, skip};

const TEST: &str = "sandbox_exec_stream::exec_t_through_the_api";
const UP: Duration = Duration::from_secs(30);

const SCRIPT: &str = r#"
import base64, fcntl, http.client, os, pty, select, ssl, struct, sys, termios, time, xmlrpc.client
ctl, tarball, digest = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl._create_unverified_context()
api = xmlrpc.client.ServerProxy("https://api:secret@127.0.0.1:8443/RPC2", context=ctx)
getattr(api, "template.import")("bb", tarball, digest)
getattr(api, "ct.create")({"name": "tty1", "template": "bb", "command": ["/bin/sleep", "1000000"]})
getattr(api, "ct.start")("tty1")

def status(path, token, upgrade=True):
    c = http.client.HTTPSConnection("127.0.0.1", 8443, context=ctx, timeout=10)
    h = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} if upgrade else {}
    if token:
        h["Authorization"] = "Basic " + base64.b64encode(b"x:" + token.encode()).decode()
    c.request("GET", path, headers=h)
    r = c.getresponse()
    c.close()
    return r.status
assert status("/streams/exec", None) == 401
assert status("/streams/exec", "wrong") == 401
assert status("/streams/nope", "secret") == 404
assert status("/streams/exec", "secret", upgrade=False) == 426
assert status("/streams/exec", "secret") == 101

def size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

def spawn(*args):
    argv = [ctl, "--url", "https://127.0.0.1:8443", "--insecure", "--token", "secret", *args]
    pid, fd = pty.fork()
    if pid == 0:
        try:
            size(0, 33, 111)
            os.execve(ctl, argv, dict(os.environ, TERM="xterm"))
        finally:
            os._exit(127)
    return pid, fd

def read_until(fd, want, seen, typed=None, within=20):
    deadline, last = time.time() + within, time.time()
    while want not in seen:
        assert time.time() < deadline, (want, bytes(seen))
        if typed and time.time() - last > 2:
            os.write(fd, typed)
            last = time.time()
        r, _, _ = select.select([fd], [], [], 0.3)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            assert chunk, ("cairnctl ended", want, bytes(seen))
            seen += chunk

def wait_exit(pid, fd, seen, within=20):
    deadline = time.time() + within
    while time.time() < deadline:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(st)
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                pass
    sys.exit("cairnctl did not end: %r" % bytes(seen))

pid, fd = spawn("ct", "exec", "-t", "tty1", "--", "/bin/sh")
seen = bytearray()
read_until(fd, b"33 111", seen, typed=b"stty size\n")
size(fd, 44, 122)
read_until(fd, b"44 122", seen, typed=b"stty size\n")
os.write(fd, b"sleep 100\n")
read_until(fd, b"sleep 100\r\n", seen)
time.sleep(0.5)
t = time.time()
os.write(fd, b"\x03")
read_until(fd, b"back-42", seen, typed=b"echo back-$((6*7))\n")
assert time.time() - t < 20
os.write(fd, b"exit 7\n")
code = wait_exit(pid, fd, seen)
assert code == 7, (code, bytes(seen))

pid, fd = spawn("ct", "enter", "tty1")
seen = bytearray()
read_until(fd, b"login-yes", seen, typed=b"case $- in *l*) echo login-yes;; *) echo login-no;; esac\n")
os.write(fd, b"exit 3\n")
assert wait_exit(pid, fd, seen) == 3

pid, fd = spawn("ct", "exec", "-t", "nosuch", "--", "/bin/sh")
seen = bytearray()
code = wait_exit(pid, fd, seen)
assert code != 0 and b"104" in seen and b"nosuch" in seen, (code, bytes(seen))
print("ok")
"#;

#[tokio::test(flavor = "current_thread")]
async fn exec_t_through_the_api() {
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
    let ctl = bins.join("cairnctl");
    if !ctl.is_file() {
        return skip(
            TEST,
            "no cairnctl beside the daemons: cargo build --workspace --bins",
        );
    }
    let scratch = TempDir::new("apid-exec-stream");
    let root = scratch.0.join("bb");
    testkit::template::busybox_rootfs(&root).expect("busybox rootfs");
    let tarball = scratch.0.join("busybox.tar");
    let digest = testkit::template::tar_dir(&root, &tarball).expect("tar the rootfs");
    let config = testkit::sandbox_config("stream-host", None);
    let mut sb = Sandbox::start("exec-stream", &config, &bins);
    let conn = sb.connect(UP).await;
    sb.wait_all(&conn, "running", UP).await;
    sb.python(
        SCRIPT,
        &[
            &ctl.display().to_string(),
            &tarball.display().to_string(),
            &digest,
        ],
    );
    sb.stop();
}
