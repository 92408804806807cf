#!/usr/bin/env python3
"""XML-RPC over keep-alive HTTPS under wrk: requests/s and p99 at 1, 8 and 64 connections.

Usage: api_load.py URL TOKEN SECONDS [--peer]
With --peer it first starts Python's own threaded SimpleXMLRPCServer over HTTPS on loopback,
serving a host.info of the same shape, and loads it with the same wrk in the same run, so apid's
figures read as a ratio against a known peer. The load client is wrk (C, one event loop per
thread), not Python, so the client is not what is measured."""
import base64
import os
import re
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import xmlrpc.client
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

CONNECTIONS = (1, 8, 64)


def lua_script(d, token, method):
    """A wrk script that POSTs one XML-RPC call with Basic auth."""
    body = xmlrpc.client.dumps((), method)
    auth = base64.b64encode(f"api:{token}".encode()).decode()
    path = os.path.join(d, f"{method}.lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {body!r}\n")
        f.write('wrk.headers["Content-Type"] = "text/xml"\n')
        f.write(f'wrk.headers["Authorization"] = "Basic {auth}"\n')
        # Any non-200 or a fault is an error the run must not hide.
        f.write('response = function(status, headers, body)\n'
                '  if status ~= 200 or string.find(body, "<fault>", 1, true) then\n'
                '    error("bad answer " .. status .. ": " .. string.sub(body, 1, 200))\n'
                '  end\nend\n')
    return path


def to_ms(text):
    value, unit = float(text[:-2] if text.endswith(("us", "ms")) else text[:-1]), text
    if unit.endswith("us"):
        return value / 1000
    if unit.endswith("ms"):
        return value
    return value * 1000


def wrk(url, script, conns, seconds):
    out = subprocess.run(["wrk", "--latency", "-t", str(min(conns, 2)), "-c", str(conns),
                          "-d", f"{seconds}s", "-s", script, url],
                         check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "error" in out.lower() and "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return rps, p99


class ThreadedServer(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True


def start_peer(d):
    """Python's threaded SimpleXMLRPCServer over TLS with a throwaway self-signed cert."""
    cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=peer",
                    "-keyout", key, "-out", cert, "-days", "1"], check=True, capture_output=True)

    class Handler(SimpleXMLRPCRequestHandler):
        protocol_version = "HTTP/1.1"
        rpc_paths = ("/RPC2",)

    srv = ThreadedServer(("127.0.0.1", 0), Handler, logRequests=False, allow_none=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    info = {"hostname": "peer", "version": "0", "uptime": 1, "kernel": "x",
            "services": [{"name": n, "state": "running", "pid": 1, "restarts": 0, "since": 0,
                          "last_error": ""}
                         for n in ("netd", "stord", "hostd", "apid")],
            "daemons": {n: {"version": "0", "objects": 0} for n in ("netd", "stord", "hostd")},
            "management": {"interface": "eth0", "address": "10.0.2.15/24", "source": "dhcp"}}
    srv.register_function(lambda: info, "host.info")
    srv.register_introspection_functions()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{srv.server_address[1]}/RPC2"


def main():
    url, token, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    per_run = max(2, int(seconds / 6))
    with tempfile.TemporaryDirectory() as d:
        servers = [("cairn apid", url, token)]
        if "--peer" in sys.argv:
            servers.insert(0, ("python", start_peer(d), "x"))
        print(f"{'server':<12} {'method':<20} {'conns':>5} {'req/s':>9} {'p99 ms':>8}")
        figures = {}
        for method in ("system.listMethods", "host.info"):
            for name, u, t in servers:
                script = lua_script(d, t, method)
                for c in CONNECTIONS:
                    rps, p99 = wrk(u, script, c, per_run)
                    figures[(name, method, c)] = rps
                    print(f"{name:<12} {method:<20} {c:>5} {rps:9.0f} {p99:8.2f}")
        if "--peer" in sys.argv:
            for method in ("system.listMethods", "host.info"):
                ratios = ", ".join(
                    f"{c}: {figures[('cairn apid', method, c)] / figures[('python', method, c)]:.2f}x"
                    for c in CONNECTIONS)
                print(f"apid / python {method}: {ratios}")


if __name__ == "__main__":
    main()
