#!/usr/bin/env python3
"""Appliance e2e for netd's kernel features this dev machine lacks (802.1Q, bridge VLAN
filtering, act_police, bonding): exercised in the appliance under QEMU through the XML-RPC API, with the
debug shell to run traffic between network namespaces inside the guest.

Run: python3 -m unittest -v ci/e2e/test_net.py   (the image built with --debug-shell first)
"""

import sys
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from appliance import ApplianceTestCase  # noqa: E402
from appliance import FAULT_BAD_PARAMS  # noqa: E402


class Networks(ApplianceTestCase):
    name = "e2e-net"

    def ns_port(self, network, ns, vlan, address):
        """A veth port whose guest end sits in a fresh namespace `ns` inside the appliance."""
        self.guest(f"ip netns add {ns}")
        spec = {"network": network, "owner": f"test:{ns}", "kind": "veth",
                "netns": f"/run/netns/{ns}", "addresses": [address]}
        if vlan is not None:
            spec["vlan"] = vlan
        return self.call("port.attach", spec)

    def ping(self, ns, address):
        rc, out = self.guest(f"ip netns exec {ns} ping -c 2 -W 2 {address}", check=False)
        return rc == 0, out

    def test_1_vlan_aware_bridge_isolates_vids(self):
        self.call("net.create", {"name": "vbr", "kind": "bridged", "vlan_aware": True,
                                 "subnet": "10.20.0.0/24"})
        a = self.ns_port("vbr", "a", 10, "10.20.0.2/24")
        self.ns_port("vbr", "b", 10, "10.20.0.3/24")
        c = self.ns_port("vbr", "c", 20, "10.20.0.4/24")
        # The kernel's own view, through the API and through iproute2 in the guest.
        info = self.call("net.info", "vbr")
        vids = {(v["port"], v["vid"]) for v in info["vlans"]}
        self.assertIn((a["name"], 10), vids, info)
        self.assertIn((c["name"], 20), vids, info)
        _, out = self.guest("cat /sys/class/net/vbr/bridge/vlan_filtering")
        self.assertEqual(out.strip(), "1")
        _, out = self.guest(f"bridge vlan show dev {a['name']}")
        self.assertIn("10", out)
        # Same VID: reachable. Other VID on the same bridge and subnet: not.
        ok, out = self.ping("a", "10.20.0.3")
        self.assertTrue(ok, out)
        ok, out = self.ping("a", "10.20.0.4")
        self.assertFalse(ok, f"VID 10 reached a port on VID 20:\n{out}")

    def test_2_8021q_link(self):
        self.call("net.create", {"name": "v100", "kind": "vlan", "uplink": "eth0", "vlan": 100})
        # The 802.1Q link is named after the network, on eth0.
        _, out = self.guest("ip -d -o link show v100")
        self.assertIn("vlan protocol 802.1Q id 100", out)
        self.assertIn("@eth0", out)
        names = {n["name"] for n in self.call("net.list")}
        self.assertIn("v100", names)
        links = {link["name"] for link in self.call("net.info", "v100")["links"]}
        self.assertIn("v100", links)

    def test_2b_classic_vlan_bridge_on_an_uplink(self):
        # A VLAN on a classic (not VLAN-aware) bridge with an uplink: a per-VLAN bridge with an
        # 802.1Q sub-interface of the uplink in it.
        self.call("net.create", {"name": "office", "kind": "bridged", "uplink": "v100"})
        self.ns_port("office", "d", 30, "10.40.0.2/24")
        _, out = self.guest("ip -d -o link show")
        self.assertIn("office.30", out)
        self.assertIn("802.1Q id 30", out)

    def test_3_bad_vlan_is_refused_and_leaves_nothing(self):
        _, before = self.guest("ip -o link show")
        with self.assertRaises(xmlrpc.client.Fault) as cm:
            self.call("net.create", {"name": "bad", "kind": "vlan", "uplink": "eth0",
                                     "vlan": 4095})
        self.assertEqual(cm.exception.faultCode, FAULT_BAD_PARAMS)
        self.assertIn("vlan", cm.exception.faultString)
        _, after = self.guest("ip -o link show")
        self.assertEqual(len(before.splitlines()), len(after.splitlines()), after)

    def test_4_police_ingress_installs(self):
        self.call("net.create", {"name": "pol", "kind": "bridged"})
        p = self.ns_port("pol", "p", None, "10.30.0.2/24")
        self.call("net.setLimits", p["name"], {
            "egress": {"rate_bps": 10_000_000}, "police": True})
        _, out = self.guest(f"tc -s filter show dev {p['name']} ingress")
        self.assertIn("police", out)
        self.assertIn("rate 10Mbit", out)

    def test_5_bond_uplink(self):
        # Two dummy NICs (the image has the dummy module) bonded into a bridged network's uplink.
        self.guest("ip link add nic1 type dummy; ip link add nic2 type dummy")
        self.call("net.create", {"name": "bnd", "kind": "bridged", "bond": ["nic1", "nic2"]})
        _, out = self.guest("ip -d -o link show bndb")
        self.assertIn("master bnd ", out)
        self.assertIn("bond mode active-backup", out)
        self.assertIn("cairn:bnd:bond", out)
        for nic in ("nic1", "nic2"):
            _, out = self.guest(f"ip -d -o link show {nic}")
            self.assertIn("master bndb ", out)
        links = {link["name"]: link for link in self.call("net.info", "bnd")["links"]}
        self.assertEqual(links["bndb"]["kind"], "bond", links)
        self.assertEqual(links["bndb"]["master"], "bnd", links)
        self.assertEqual(links["nic1"]["master"], "bndb", links)
        self.assertEqual(links["nic2"]["master"], "bndb", links)
        # Deleting the network releases the NICs and deletes the bond.
        self.call("net.delete", "bnd")
        _, out = self.guest("ip -o link show")
        self.assertNotIn("bndb", out)
        for nic in ("nic1", "nic2"):
            _, out = self.guest(f"ip -o link show {nic}")
            self.assertNotIn("master", out)

    def test_6_port_security_on_debian_kernel(self):
        """The nf_tables guard (netd/src/guard) loads and drops on the appliance's kernel."""
        self.call("net.create", {"name": "sec", "kind": "bridged", "subnet": "10.50.0.0/24"})
        a = self.ns_port("sec", "sa", None, "10.50.0.2/24")
        self.ns_port("sec", "sb", None, "10.50.0.3/24")
        ok, out = self.ping("sa", "10.50.0.3")
        self.assertTrue(ok, out)
        self.guest("ip netns exec sa ip addr add 10.50.0.9/32 dev eth0")
        rc, out = self.guest("ip netns exec sa ping -c 2 -W 2 -I 10.50.0.9 10.50.0.3",
                             check=False)
        self.assertNotEqual(rc, 0, f"a spoofed source got through:\n{out}")
        ports = {p["name"]: p for p in self.call("port.list")}
        self.assertGreater(ports[a["name"]].get("spoof_drops", 0), 0, ports[a["name"]])

    def test_9_poweroff(self):
        self.wait_poweroff()
