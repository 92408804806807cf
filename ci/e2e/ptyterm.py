"""cairnctl on a pseudo-terminal, as a user at a terminal runs it: the helpers the interactive
e2e tests (test_streams.py, test_console.py) share. Mixed into an ApplianceTestCase, whose
`port` and `token` reach the appliance."""

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time

from appliance import ROOT

WAIT_S = 60


def set_size(fd, rows, cols):
    """Sets the window size of the terminal `fd` is (the kernel sends SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class PtyCairnctl:
    # How often read_until types its `typed` again while the answer is not there.
    retype_s = 2

    def spawn(self, *args, rows=24, cols=80, token=None):
        """Starts `cairnctl ARGS` on a new pseudo-terminal of rows x cols; (pid, master fd).
        Killed and reaped at the test's cleanup."""
        ctl = ROOT / "target" / "debug" / "cairnctl"
        if not ctl.is_file():
            self.fail(f"{ctl} is missing: `cargo build --workspace --bins` builds it")
        argv = [str(ctl), "--url", f"https://127.0.0.1:{self.port}/RPC2", "--insecure", *args]
        env = dict(os.environ, CAIRN_TOKEN=token or self.token, TERM="xterm")
        pid, fd = pty.fork()
        if pid == 0:
            try:
                # The window size is set before cairnctl starts, as a terminal emulator's is.
                set_size(0, rows, cols)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.addCleanup(self.reap, pid, fd)
        return pid, fd

    def reap(self, pid, fd):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass

    def read_until(self, fd, want, seen, typed=None, within=WAIT_S):
        """Reads the terminal into `seen` (a bytearray) until it holds `want`; types `typed`
        again every `retype_s` meanwhile (a shell may not read its terminal yet)."""
        deadline = time.monotonic() + within
        last_typed = time.monotonic()
        while want not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(f"never saw {want!r} on the terminal; it showed:\n"
                          f"{bytes(seen).decode(errors='replace')}")
            if typed is not None and time.monotonic() - last_typed > self.retype_s:
                os.write(fd, typed)
                last_typed = time.monotonic()
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: cairnctl is gone and the terminal with it
                    chunk = b""
                if not chunk:
                    self.fail(f"cairnctl ended before {want!r}; the terminal showed:\n"
                              f"{bytes(seen).decode(errors='replace')}")
                seen += chunk

    def wait_exit(self, pid, fd, seen, within=30):
        """cairnctl's exit status, once it ended (what it still shows goes into `seen`)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    pass
        self.fail(f"cairnctl still runs after {within} s; the terminal showed:\n"
                  f"{bytes(seen).decode(errors='replace')}")
