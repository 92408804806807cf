#!/usr/bin/env python3
"""Appliance e2e of `cairn.config=<URL>` (a PXE fleet, each host fetching its own file): a test
HTTP server on this machine's loopback serves one host.toml per MAC; two appliances with
different MACs boot with `cairn.config=http://10.0.2.2:PORT/${mac}.toml` — one over PXE
(QEMU's TFTP and iPXE), one booted directly with the `${mac}` left for init to fill in — and
each comes up running its own file: its hostname, its token, `config_source` `url`. The URL
wins over the config baked into the image.

Run: python3 -m unittest -v ci/e2e/test_config_url.py   (the image built first)
"""

import functools
import http.server
import sys
import tempfile
import threading
import time
import unittest
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase, api_config, free_port  # noqa: E402

TOKEN = "fleet-token"


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Fleet:
    """One host of the fleet; subclasses give its boot path, MAC and expected hostname."""

    cpus = 1
    hostname = None
    server = None
    served = None
    scheme = "http"

    @classmethod
    def setUpClass(cls):
        # The files exist before the host boots; the server lives as long as the class.
        cls.served = tempfile.TemporaryDirectory()
        (Path(cls.served.name) / f"{cls.mac}.toml").write_text(api_config(cls.hostname, TOKEN))
        port = free_port()
        handler = functools.partial(Quiet, directory=cls.served.name)
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        if cls.scheme == "tftp":
            # QEMU's own TFTP server at 10.0.2.2 serves the same directory.
            cls.tftp = cls.served.name
            cls.append = "cairn.config=tftp://10.0.2.2/${mac}.toml"
        else:
            cls.append = f"cairn.config=http://10.0.2.2:{port}/${{mac}}.toml"
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.server:
            cls.server.shutdown()
            cls.server.server_close()
        if cls.served:
            cls.served.cleanup()

    def test_runs_its_own_config_from_the_url(self):
        type(self).url = f"https://api:{TOKEN}@127.0.0.1:{self.port}/RPC2"
        deadline, info, last = time.monotonic() + 120, None, None
        while time.monotonic() < deadline:
            try:
                info = self.call("host.info")
                if info.get("mode") == "running":
                    break
            except (OSError, xmlrpc.client.ProtocolError, xmlrpc.client.Fault) as e:
                last = e  # the maintenance token holds until the fetched config is applied
            time.sleep(1)
        self.assertIsNotNone(info, f"the fleet token never opened the API: {last!r}\n"
                             f"{self.console_tail()}")
        self.assertEqual((info["hostname"], info["mode"], info["config_source"]),
                         (self.hostname, "running", "url"), info)
        _, cmdline = self.guest("cat /proc/cmdline")
        self.assertIn(f"cairn.config={self.scheme}://10.0.2.2", cmdline)
        console = self.console_log.read_text(errors="replace")
        self.assertIn(f"/{self.mac}.toml", console, "the console never named the fetched URL")


class FleetHostOverPxe(Fleet, ApplianceTestCase):
    name = "e2e-fleet-pxe"
    boot = "pxe"
    mac = "52:54:00:0a:00:01"
    hostname = "fleet-a"


class FleetHostDirect(Fleet, ApplianceTestCase):
    name = "e2e-fleet-direct"
    boot = "direct"
    mac = "52:54:00:0b:00:02"
    hostname = "fleet-b"


class FleetHostOverTftp(Fleet, ApplianceTestCase):
    """The config from the TFTP server a PXE fleet boots from (QEMU's built-in one)."""
    name = "e2e-fleet-tftp"
    boot = "direct"
    mac = "52:54:00:0c:00:03"
    hostname = "fleet-c"
    scheme = "tftp"


if __name__ == "__main__":
    unittest.main()
