#!/usr/bin/env python3
"""XML-RPC over one keep-alive HTTPS connection: requests/s, p50 and p99 latency.

Usage: api_load.py URL TOKEN SECONDS [--peer]
With --peer it first starts Python's own SimpleXMLRPCServer over HTTPS on loopback, serving a
host.info of the same shape, and measures that with the same client in the same run, so the
figures can be read as a ratio against a known peer."""
import base64
import http.client
import ssl
import statistics
import sys
import threading
import time
import urllib.parse
import xmlrpc.client


def measure(url, token, seconds, method="host.info"):
    u = urllib.parse.urlsplit(url)
    ctx = ssl._create_unverified_context()
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
    body = xmlrpc.client.dumps((), method).encode()
    auth = base64.b64encode(f"api:{token}".encode()).decode()
    headers = {"Content-Type": "text/xml", "Authorization": f"Basic {auth}"}
    lat = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        conn.request("POST", u.path or "/RPC2", body, headers)
        resp = conn.getresponse()
        data = resp.read()
        lat.append(time.perf_counter() - t0)
        if resp.status != 200 or b"<fault>" in data:
            raise SystemExit(f"bad answer {resp.status}: {data[:200]!r}")
    total = sum(lat)
    lat.sort()
    return len(lat) / total, statistics.median(lat) * 1e3, lat[int(len(lat) * 0.99) - 1] * 1e3


def start_peer():
    """Python's SimpleXMLRPCServer over TLS with a throwaway self-signed cert."""
    import os
    import subprocess
    import tempfile
    from xmlrpc.server import SimpleXMLRPCServer, SimpleXMLRPCRequestHandler

    d = tempfile.mkdtemp()
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=peer",
                    "-keyout", key, "-out", cert, "-days", "1"], check=True, capture_output=True)

    class Handler(SimpleXMLRPCRequestHandler):
        protocol_version = "HTTP/1.1"
        rpc_paths = ("/RPC2",)

    srv = SimpleXMLRPCServer(("127.0.0.1", 0), Handler, logRequests=False, allow_none=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    info = {"hostname": "peer", "version": "0", "uptime": 1, "kernel": "x",
            "services": [{"name": n, "state": "running", "pid": 1, "restarts": 0, "since": 0,
                          "last_error": ""}
                         for n in ("netd", "stord", "hostd", "apid")]}
    srv.register_function(lambda: info, "host.info")
    srv.register_introspection_functions()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{srv.server_address[1]}/RPC2"


def main():
    url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    # system.listMethods costs the same on both servers (no D-Bus behind it), so it compares the
    # HTTPS + XML-RPC layers; host.info on apid adds six D-Bus calls to init and the daemons.
    print(f"{'server / method':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    rows = []
    if "--peer" in sys.argv:
        peer = start_peer()
        rows.append(("python SimpleXMLRPCServer system.listMethods", peer, "x", "system.listMethods"))
    rows.append(("cairn apid system.listMethods", url, token, "system.listMethods"))
    rows.append(("cairn apid host.info", url, token, "host.info"))
    for label, u, t, m in rows:
        rps, p50, p99 = measure(u, t, seconds / len(rows), m)
        print(f"{label:<44} {rps:8.0f} {p50:8.2f} {p99:8.2f}")


if __name__ == "__main__":
    main()
