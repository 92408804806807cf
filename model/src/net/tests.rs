use super::*;

fn net(json: &str) -> NetworkSpec {
    serde_json::from_str(json).expect("network spec JSON")
}

fn port(json: &str) -> PortSpec {
    serde_json::from_str(json).expect("port spec JSON")
}

fn problems(r: Result<(), InvalidSpec>) -> Vec<String> {
    r.err().map(|e| e.problems).unwrap_or_default()
}

#[test]
fn network_specs_parse_and_validate() {
    let ok = net(
        r#"{"name":"lan","kind":"bridged","uplink":"eno1","vlan_aware":true,
            "subnet":"10.10.0.0/24","address":"10.10.0.1/24",
            "limits":{"egress":{"rate_bps":100000000}}}"#,
    );
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ok.kind, NetworkKind::Bridged);
    assert!(ok.vlan_aware);
    // Round trip: what netd persists reads back the same.
    let back: NetworkSpec =
        serde_json::from_str(&serde_json::to_string(&ok).expect("serialize")).expect("parse");
    assert_eq!(back, ok);
    assert!(
        serde_json::from_str::<NetworkSpec>(r#"{"name":"a","kind":"bridged","vlans":1}"#).is_err()
    );
    assert!(serde_json::from_str::<NetworkSpec>(r#"{"name":"a","kind":"nat"}"#).is_err());
}

#[test]
fn network_problems_name_the_field() {
    let p = problems(net(r#"{"name":"v","kind":"vlan","uplink":"eno1","vlan":4095}"#).validate());
    assert_eq!(p, ["vlan = 4095 is out of range 1..=4094"]);
    let p = problems(net(r#"{"name":"v","kind":"vlan","uplink":"eno1","vlan":0}"#).validate());
    assert_eq!(p, ["vlan = 0 is out of range 1..=4094"]);
    let p = problems(net(r#"{"name":"v","kind":"vlan"}"#).validate());
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("vlan is required"));
    assert!(p[1].starts_with("uplink is required"));
    let p = problems(net(r#"{"name":"Lan_1","kind":"routed","vlan_aware":true}"#).validate());
    assert!(
        p[0].starts_with("name \"Lan_1\" is not a valid network name"),
        "{p:?}"
    );
    assert!(
        p[1].starts_with("vlan_aware is only used with kind \"bridged\""),
        "{p:?}"
    );
    let p = problems(
        net(r#"{"name":"lan","kind":"bridged","subnet":"10.0.0.1/24","address":"10.0.1.300/24"}"#)
            .validate(),
    );
    assert_eq!(
        p,
        [
            "subnet \"10.0.0.1/24\" has host bits set; expected \"10.0.0.0/24\"",
            "address \"10.0.1.300/24\" is not a CIDR: it has an invalid address \"10.0.1.300\"; \
             expected an IPv4 or IPv6 address before the '/'"
        ]
    );
    let p = problems(
        net(r#"{"name":"lan","kind":"bridged","subnet":"10.0.0.0/24","address":"10.0.1.1/24"}"#)
            .validate(),
    );
    assert_eq!(
        p,
        ["address \"10.0.1.1/24\" lies outside the network's subnet 10.0.0.0/24"]
    );
    let p =
        problems(net(r#"{"name":"lan","kind":"bridged","address":"10.0.0.255/24"}"#).validate());
    assert!(
        p[0].starts_with("address \"10.0.0.255/24\" is the broadcast address"),
        "{p:?}"
    );
    let p = problems(
        net(r#"{"name":"lan","kind":"bridged","limits":{"ingress":{"rate_bps":1}}}"#).validate(),
    );
    assert!(
        p[0].starts_with("limits.ingress.rate_bps = 1 is out of range"),
        "{p:?}"
    );
}

#[test]
fn config_networks_convert() {
    let cfg = crate::config::Network {
        name: "lan".into(),
        kind: crate::config::NetworkKind::Bridged,
        uplink: Some("eno1".into()),
        vlan: None,
        bond: Vec::new(),
        bond_mode: None,
        subnet: crate::config::parse_cidr("10.1.0.0/24").ok(),
        address: crate::config::parse_cidr("10.1.0.1/24").ok(),
    };
    let spec = NetworkSpec::from(&cfg);
    assert_eq!(spec.subnet.as_deref(), Some("10.1.0.0/24"));
    assert_eq!(spec.address.as_deref(), Some("10.1.0.1/24"));
    assert_eq!(spec.validate(), Ok(()));
}

#[test]
fn port_specs_parse_and_validate() {
    let ok = port(
        r#"{"network":"lan","owner":"ct:web1","kind":"veth","netns":"/run/netns/web1",
            "guest_ifname":"eth1","mac":"02:00:00:00:00:01","vlan":10,"tagged_vlans":[20,30],
            "addresses":["10.0.0.5/24","fd00::5/64"]}"#,
    );
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ok.guest_ifname(), "eth1");
    assert_eq!(ok.mac_bytes(), Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(ok.address_cidrs().len(), 2);
    let tap = port(r#"{"network":"lan","owner":"vm:db","kind":"tap"}"#);
    assert_eq!(tap.validate(), Ok(()));
    assert_eq!(tap.guest_ifname(), "eth0");
    assert!(
        serde_json::from_str::<PortSpec>(r#"{"network":"lan","owner":"x","kind":"tap","vid":1}"#)
            .is_err()
    );
}

#[test]
fn port_problems_name_the_field() {
    let p = problems(
        port(
            r#"{"network":"lan","owner":"ct:a","kind":"veth","netns":"/run/netns/a",
                "addresses":["10.0.0.5/24","10.0.0.300/24"]}"#,
        )
        .validate(),
    );
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("addresses[1] \"10.0.0.300/24\" is not a CIDR"),
        "{p:?}"
    );
    let p = problems(
        port(r#"{"network":"lan","owner":"ct:a","kind":"tap","vlan":4095,"tagged_vlans":[5,5,0]}"#)
            .validate(),
    );
    assert_eq!(
        p,
        [
            "vlan = 4095 is out of range 1..=4094",
            "tagged_vlans[1] = 5 is listed twice",
            "tagged_vlans[2] = 0 is out of range 1..=4094"
        ]
    );
    let p = problems(port(r#"{"network":"lan","owner":"","kind":"veth"}"#).validate());
    assert!(p[0].starts_with("owner \"\" is not a valid owner"), "{p:?}");
    assert!(p[1].starts_with("netns is required"), "{p:?}");
    let p = problems(
        port(r#"{"network":"lan","owner":"a","kind":"tap","mac":"01:00:5e:00:00:01","guest_ifname":"x"}"#)
            .validate(),
    );
    assert!(p[0].starts_with("guest_ifname is only used"), "{p:?}");
    assert!(
        p[1].starts_with("mac \"01:00:5e:00:00:01\" is not a unicast MAC"),
        "{p:?}"
    );
    let p = problems(
        port(r#"{"network":"lan","owner":"a","kind":"tap","addresses":["10.0.0.5/24","10.0.0.5/32","10.0.0.0/24"]}"#)
            .validate(),
    );
    assert!(
        p[0].starts_with("addresses[1] \"10.0.0.5/32\" repeats"),
        "{p:?}"
    );
    assert!(
        p[1].starts_with("addresses[2] \"10.0.0.0/24\" is the network address"),
        "{p:?}"
    );
}

#[test]
fn macs() {
    assert_eq!(
        parse_mac("02:AB:cd:00:00:01"),
        Some([2, 0xab, 0xcd, 0, 0, 1])
    );
    assert_eq!(parse_mac("02:ab:cd:00:00"), None);
    assert_eq!(parse_mac("02:ab:cd:00:00:01:02"), None);
    assert_eq!(parse_mac("00:00:00:00:00:00"), None);
    assert_eq!(parse_mac("2:ab:cd:00:00:01"), None);
    assert_eq!(format_mac(&[2, 0xab, 0, 0, 0, 1]), "02:ab:00:00:00:01");
}

#[test]
fn bonds_are_checked_and_named() {
    let ok = net(r#"{"name":"lan","kind":"bridged","bond":["eth1","eth2"]}"#);
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ok.bond_mode(), crate::net::BondMode::ActiveBackup);
    let lacp =
        net(r#"{"name":"lan","kind":"bridged","bond":["eth1","eth2"],"bond_mode":"802.3ad"}"#);
    assert_eq!(lacp.bond_mode(), crate::net::BondMode::Ieee8023ad);
    let p = problems(
        net(
            r#"{"name":"lan","kind":"routed","uplink":"eth0","bond":["eth1","eth1","a/b"],
                "bond_mode":"broadcast"}"#,
        )
        .validate(),
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("bond_mode \"broadcast\" is not a bond mode")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("bond[1] \"eth1\" is listed twice")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("bond[2] \"a/b\" is not a valid interface")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("bond and uplink exclude each other")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.starts_with("bond is only used with kind \"bridged\"")),
        "{p:?}"
    );
    let p = problems(net(r#"{"name":"lan","kind":"bridged","bond":["eth1"]}"#).validate());
    assert!(
        p[0].starts_with("bond has 1 NICs; expected 2 to 8"),
        "{p:?}"
    );
    let p = problems(net(r#"{"name":"lan","kind":"bridged","bond_mode":"balance-rr"}"#).validate());
    assert_eq!(p, ["bond_mode is only used with bond"]);
}

#[test]
fn port_security_is_on_unless_turned_off() {
    let on = port(r#"{"network":"lan","owner":"ct:a","kind":"veth"}"#);
    assert!(on.port_security);
    // Left out when on, so records written before the field existed read the same.
    let json = serde_json::to_string(&on).expect("json");
    assert!(!json.contains("port_security"), "{json}");
    let off = port(r#"{"network":"lan","owner":"ct:a","kind":"veth","port_security":false}"#);
    assert!(!off.port_security);
    assert_eq!(port(&serde_json::to_string(&off).expect("json")), off);
}
