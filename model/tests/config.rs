//! Behaviour of `model::config::parse` beyond the golden files: defaults, typed values, and the
//! shape of diagnostics.

use model::config::{MgmtAddress, PoolKind, Tls, parse};

const MINIMAL: &str = r#"
[host]
hostname = "h"
[host.management]
interface = "eth0"
dhcp = true
"#;

fn errors(text: &str) -> Vec<String> {
    match parse("t.toml", text) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn minimal_file_gets_defaults() {
    let c = parse("t.toml", MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.host.timezone, "UTC");
    assert!(c.host.dns.is_empty());
    assert_eq!(c.api.listen.to_string(), "0.0.0.0");
    assert_eq!(c.api.port, 8443);
    assert_eq!(c.api.tls, Tls::Generate);
    assert!(c.api.tokens.is_empty());
    assert!(c.networks.is_empty() && c.pools.is_empty() && c.vms.is_empty());
}

/// One size grammar (`model::units::parse_size`): decimal units are decimal, the single letters
/// and IEC units binary, whole-byte fractions accepted.
#[test]
fn sizes_in_every_spelling() {
    let text = format!(
        "{MINIMAL}
[[pool]]
name = \"p\"
kind = \"thin\"
size = \"1.5T\"
[[template]]
name = \"t\"
[[container]]
name = \"a\"
template = \"t\"
pool = \"p\"
memory = \"256MB\"
disk = \"12GB\"
[[container]]
name = \"b\"
template = \"t\"
pool = \"p\"
memory = \"512m\"
disk = \"20GiB\"
[[vm]]
name = \"v\"
memory = \"1.5G\"
kernel = \"/k\"
"
    );
    let c = parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.pools[0].size, Some(3 << 39));
    assert_eq!(c.containers[0].memory, Some(256_000_000));
    assert_eq!(c.containers[0].disk, Some(12_000_000_000));
    assert_eq!(c.containers[1].memory, Some(512 << 20));
    assert_eq!(c.containers[1].disk, Some(20 << 30));
    assert_eq!(c.vms[0].memory, 1536 << 20);
    // A VM's RAM is whole MiB, which 256 000 000 bytes are not.
    let errs = errors(&text.replace("memory = \"1.5G\"", "memory = \"256MB\""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].ends_with("memory \"256MB\" in vm \"v\" is not a whole number of MiB; expected a size such as \"512M\" or \"2G\""),
        "{errs:?}"
    );
}

#[test]
fn full_example_values_are_typed() {
    let text = include_str!("../../examples/full.toml");
    let c = parse("full.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<PoolKind> = c.pools.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            PoolKind::Dir,
            PoolKind::Thin,
            PoolKind::Nfs,
            PoolKind::Iscsi
        ]
    );
    assert_eq!(c.pools[1].size, Some(500 << 30));
    assert_eq!(c.containers[0].memory, Some(512 << 20));
    assert_eq!(c.containers[0].cpu_limit, Some(50));
    assert_eq!(c.containers[1].memory, Some(64 << 20));
    assert_eq!(c.vms[0].vcpus, 2);
    assert_eq!(c.vms[0].memory, 2 << 30);
    assert_eq!(c.vms[0].disks.len(), 2);
    assert_eq!(c.vms[1].vcpus, 1, "vcpus defaults to 1");
    let vlan20 = c
        .networks
        .iter()
        .find(|n| n.name == "vlan20")
        .expect("vlan20");
    assert_eq!(vlan20.vlan, Some(20));
    assert!(c.templates[1].sha256.is_some());
    assert_eq!(c.templates[0].pool, None, "no pool: hostd's state keeps it");
    assert_eq!(c.templates[0].source.as_deref(), Some("bundled:busybox"));
    assert_eq!(
        c.templates[0].sha256, None,
        "a bundled template needs no digest"
    );
    assert_eq!(c.templates[1].pool.as_deref(), Some("nas"));
}

#[test]
fn static_example_has_gateway() {
    let text = include_str!("../../examples/static.toml");
    let c = parse("static.toml", text).unwrap_or_else(|e| panic!("{e}"));
    match c.host.management.address {
        MgmtAddress::Static { address, gateway } => {
            assert_eq!(address.to_string(), "192.0.2.10/24");
            assert_eq!(gateway.map(|g| g.to_string()).as_deref(), Some("192.0.2.1"));
        }
        MgmtAddress::Dhcp => panic!("expected a static address"),
    }
    assert!(matches!(c.api.tls, Tls::Files { .. }));
}

#[test]
fn syntax_error_is_one_diagnostic_at_its_position() {
    let errs = errors("[host]\nhostname = \n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("t.toml:2:12: invalid TOML: "),
        "{errs:?}"
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = format!("{MINIMAL}[[pool]]\nname = \"é\"; kind = \"dir\"\n");
    // A ';' is not TOML; the error must point at it by character column.
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("t.toml:8:11:"), "{errs:?}");
}

#[test]
fn missing_host_is_reported_at_the_start() {
    assert_eq!(
        errors("[api]\nport = 1\n"),
        ["t.toml:1:1: missing the required [host] table"]
    );
}

#[test]
fn load_names_the_file_when_it_cannot_be_read() {
    let err = model::config::load(std::path::Path::new("/nonexistent/host.toml"))
        .expect_err("no such file");
    assert_eq!(err.0.len(), 1);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/host.toml:1:1: cannot read the file: ")
    );
}

#[test]
fn implicit_host_table_is_reported_where_it_is_named() {
    // [host] exists only through [host.management]; its missing hostname is reported at the
    // "host" in that header, the closest thing to a [host] header there is.
    assert_eq!(
        errors("[host.management]\ndhcp = true\n"),
        [
            "t.toml:1:1: [host.management] is missing the required key \"interface\"",
            "t.toml:1:2: [host] is missing the required key \"hostname\"",
        ]
    );
}

#[test]
fn tls_must_be_generate_or_files() {
    assert_eq!(
        errors(&format!("{MINIMAL}[api]\ntls = \"manual\"\n")),
        [
            "t.toml:8:7: tls \"manual\" in [api] is not understood; expected \"generate\" or \
             { cert = \"/path\", key = \"/path\" }"
        ]
    );
    assert_eq!(
        errors(&format!("{MINIMAL}[api]\ntls = 1\n")),
        ["t.toml:8:7: tls in [api] must be \"generate\" or a table, not the integer 1"]
    );
}

#[test]
fn single_table_instead_of_array_of_tables() {
    assert_eq!(
        errors(&format!("{MINIMAL}[network]\nname = \"lan\"\n")),
        ["t.toml:7:1: network in the file must be an array of tables ([[network]]), not a table"]
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = format!(
        "{MINIMAL}[[vm]]\nname = \"b\"\nmemory = \"1X\"\nkernel = \"/k\"\n[[vm]]\nname = \"a\"\n\
         vcpus = 0\nkernel = \"/k\"\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 3, "{errs:?}");
    let lines: Vec<usize> = errs
        .iter()
        .map(|e| {
            e.split(':')
                .nth(1)
                .and_then(|l| l.parse().ok())
                .expect("line number")
        })
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{errs:?}");
}

#[test]
fn documented_example_is_valid() {
    // The full example in docs/config.md is kept valid so the documentation cannot drift.
    let doc = include_str!("../../docs/config.md");
    let start = doc
        .find("```toml\n")
        .expect("a toml block in docs/config.md")
        + "```toml\n".len();
    let len = doc[start..].find("```").expect("the end of the toml block");
    if let Err(e) = parse("config.md", &doc[start..start + len]) {
        panic!("docs/config.md example is invalid:\n{e}");
    }
}

#[test]
fn vm_entries_become_the_specs_hostd_creates() {
    let text = format!(
        r#"{MINIMAL}
[[network]]
name = "lan"
kind = "bridged"

[[vm]]
name = "deb"
vcpus = 2
memory = "1G"
kernel = "/var/lib/cairn/kernels/vmlinux"
initrd = "/var/lib/cairn/kernels/initrd.img"
cmdline = "reboot=k panic=1"
cpu_limit = 150
cpu_weight = 300

[[vm.disk]]
path = "/var/lib/cairn/disks/deb.raw"

[[vm.disk]]
volume = "local/deb-data"
read_only = true

[[vm.nic]]
network = "lan"
mac = "52:54:00:12:34:56"

[[vm.nic]]
network = "lan"

[[vm]]
name = "tiny"
memory = 67108864
kernel = "/k"
autostart = false
"#
    );
    let c = parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let specs = c.vm_specs();
    assert_eq!(specs.len(), 2);
    let json = serde_json::to_value(&specs[0]).unwrap_or_default();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "deb", "vcpus": 2, "memory_mib": 1024,
            "kernel": "/var/lib/cairn/kernels/vmlinux",
            "initrd": "/var/lib/cairn/kernels/initrd.img",
            "cmdline": "reboot=k panic=1",
            "disks": [{"path": "/var/lib/cairn/disks/deb.raw"},
                      {"volume": "local/deb-data", "read_only": true}],
            "nics": [{"network": "lan", "mac": "52:54:00:12:34:56"}, {"network": "lan"}],
            "resources": {"cpu_limit": 150, "cpu_weight": 300},
            "autostart": true,
        })
    );
    assert_eq!(specs[1].vcpus, 1, "vcpus defaults to 1");
    assert_eq!(specs[1].memory_mib, 64);
    assert!(!specs[1].autostart);
    // What host.toml accepts, the API accepts too.
    for s in &specs {
        assert_eq!(s.validate(), Ok(()), "{}", s.name);
    }
    assert_eq!(c.vms[0].spec(), specs[0]);
}

#[test]
fn example_vms_are_valid_specs() {
    let c = parse("full.toml", include_str!("../../examples/full.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.vms.is_empty());
    for s in c.vm_specs() {
        assert_eq!(s.validate(), Ok(()), "{}", s.name);
    }
}

/// One rule source: a `[[vm]]` in host.toml and a `vm.create` spec are checked by the same
/// rules (`model::rules`), so `config check` and the API say the same words — host.toml adds
/// where (`file:line:col` and `in vm "deb"`).
#[test]
fn vm_rules_read_the_same_in_host_toml_and_in_vm_create() {
    let text = format!(
        "{MINIMAL}
[[vm]]
name = \"deb\"
vcpus = 9
memory = \"2T\"
kernel = \"/boot/vmlinux\"
cpu_limit = 0
"
    );
    let config = errors(&text);
    let spec = model::vm::VmSpec {
        name: "deb".into(),
        vcpus: 9,
        memory_mib: 2 << 20,
        kernel: "/boot/vmlinux".into(),
        initrd: None,
        cmdline: String::new(),
        disks: Vec::new(),
        nics: Vec::new(),
        resources: model::ct::Resources {
            cpu_limit: Some(0),
            ..Default::default()
        },
        autostart: false,
    };
    let api = spec.validate().unwrap_err().problems;
    assert_eq!(
        api,
        [
            "vcpus 9 is out of range; expected 1 to 8",
            "memory_mib 2097152 is more than a VM can have; expected at most 1048576 MiB (\"1T\")",
            "resources.cpu_limit 0 is out of range; expected 1 to 102400",
        ]
    );
    assert_eq!(
        config,
        [
            "t.toml:10:9: vcpus 9 in vm \"deb\" is out of range; expected 1 to 8",
            "t.toml:11:10: memory \"2T\" in vm \"deb\" is more than a VM can have; expected at \
             most 1048576 MiB (\"1T\")",
            "t.toml:13:13: cpu_limit 0 in vm \"deb\" is out of range; expected 1 to 102400",
        ]
    );
    // Word for word: the rule's text after the value is the same in both.
    for (a, c) in api.iter().zip(&config) {
        let rule = |m: &str| m.split_once(" is ").map(|(_, r)| r.to_string());
        assert_eq!(rule(a), rule(c), "{a} / {c}");
    }
}

/// The checks `ct.create` makes against what exists, as host.toml makes them across entries:
/// one guest namespace, addresses inside the network's subnet and held once per network.
#[test]
fn container_addresses_and_guest_names_across_entries() {
    let text = format!(
        "{MINIMAL}
[[network]]
name = \"lan\"
kind = \"bridged\"
subnet = \"10.0.0.0/24\"
address = \"10.0.0.1/24\"

[[template]]
name = \"bb\"
source = \"/t.tar\"
sha256 = \"sha256:{zero}\"

[[container]]
name = \"a\"
template = \"bb\"
network = \"lan\"
addresses = [\"10.0.0.5/24\"]

[[container]]
name = \"b\"
template = \"bb\"
network = \"lan\"
addresses = [\"10.0.0.5/24\", \"10.0.0.1/24\", \"10.9.0.1/24\"]

[[vm]]
name = \"a\"
memory = \"64M\"
kernel = \"/k\"
",
        zero = "0".repeat(64)
    );
    let e = errors(&text);
    let want = [
        "addresses[0] \"10.0.0.5/24\" in container \"b\" is already held by container \"a\" \
         (line 23); expected each address once on a network",
        "addresses[1] \"10.0.0.1/24\" in container \"b\" is already held by the host (network \
         \"lan\" address); expected each address once on a network",
        "addresses[2] \"10.9.0.1/24\" in container \"b\" lies outside subnet 10.0.0.0/24 of \
         network \"lan\"",
        "vm \"a\" has the same name as container \"a\" (line 20); containers and vms share one \
         namespace",
    ];
    for w in want {
        assert!(e.iter().any(|m| m.ends_with(w)), "{w}\nnot in\n{e:#?}");
    }
    assert_eq!(e.len(), want.len(), "{e:#?}");
}

/// `n` networks, one per `[[network]]`, with the subnet `subnet(i)`; returns the text and the
/// line of each network's `subnet` key.
fn networks_file(n: usize, subnet: impl Fn(usize) -> String) -> (String, Vec<usize>) {
    let mut text = MINIMAL.to_string();
    // Counted as the text grows: recounting it per network would make this test quadratic.
    let mut newlines = text.matches('\n').count();
    let mut lines = Vec::with_capacity(n);
    for i in 0..n {
        text.push_str(&format!(
            "\n[[network]]\nname = \"n{i}\"\nkind = \"bridged\"\n"
        ));
        newlines += 4;
        lines.push(newlines + 1);
        text.push_str(&format!("subnet = \"{}\"\n", subnet(i)));
        newlines += 1;
    }
    (text, lines)
}

#[test]
fn twenty_thousand_disjoint_networks_are_valid() {
    let (text, _) = networks_file(20_000, |i| format!("10.{}.{}.0/24", i >> 8, i & 255));
    let c = parse("t.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.networks.len(), 20_000);
    assert_eq!(c.networks[19_999].name, "n19999");
    assert_eq!(
        c.networks[19_999].subnet.map(|s| s.to_string()).as_deref(),
        Some("10.78.31.0/24")
    );
}

#[test]
fn twenty_thousand_networks_on_one_subnet_get_one_line_each() {
    // Every pair overlaps: 200 million pairs, but one diagnostic per network after the first,
    // each naming the first network, at the subnet's line and column.
    let (text, lines) = networks_file(20_000, |_| "10.0.0.0/24".to_string());
    let errs = errors(&text);
    let expected: Vec<String> = (1..20_000)
        .map(|i| {
            format!(
                "t.toml:{}:10: subnet \"10.0.0.0/24\" in network \"n{i}\" overlaps subnet \
                 10.0.0.0/24 of network \"n0\" (line {})",
                lines[i], lines[0]
            )
        })
        .collect();
    assert_eq!(errs.len(), expected.len());
    assert_eq!(errs, expected);
}

#[test]
fn an_overlap_names_the_first_network_it_overlaps() {
    let subnets = [
        "10.1.0.0/24",   // n0
        "10.2.0.0/24",   // n1
        "fd00::/16",     // n2
        "10.0.0.0/8",    // n3: contains n0 and n1; n0 comes first
        "10.1.0.0/16",   // n4: inside n3, contains n0; n0 comes first
        "10.2.0.128/25", // n5: inside n1 and n3; n1 comes first
        "fd00:1::/32",   // n6: inside n2 only (other family than the rest)
        "192.0.2.0/24",  // n7: overlaps nothing
    ];
    let (text, lines) = networks_file(subnets.len(), |i| subnets[i].to_string());
    let at = |i: usize| format!("t.toml:{}:10:", lines[i]);
    assert_eq!(
        errors(&text),
        [
            format!(
                "{} subnet \"10.0.0.0/8\" in network \"n3\" overlaps subnet 10.1.0.0/24 of \
                 network \"n0\" (line {})",
                at(3),
                lines[0]
            ),
            format!(
                "{} subnet \"10.1.0.0/16\" in network \"n4\" overlaps subnet 10.1.0.0/24 of \
                 network \"n0\" (line {})",
                at(4),
                lines[0]
            ),
            format!(
                "{} subnet \"10.2.0.128/25\" in network \"n5\" overlaps subnet 10.2.0.0/24 of \
                 network \"n1\" (line {})",
                at(5),
                lines[1]
            ),
            format!(
                "{} subnet \"fd00:1::/32\" in network \"n6\" overlaps subnet fd00::/16 of \
                 network \"n2\" (line {})",
                at(6),
                lines[2]
            ),
        ]
    );
}

#[test]
fn a_duplicate_network_is_reported_as_such_not_as_an_overlap() {
    let (text, lines) = networks_file(3, |i| {
        ["10.0.0.0/24", "10.1.0.0/24", "10.0.0.0/16"][i].into()
    });
    // The third network takes the first one's name.
    let text = text.replacen("name = \"n2\"", "name = \"n0\"", 1);
    assert_eq!(
        errors(&text),
        [format!(
            "t.toml:{}:8: network \"n0\" is defined twice (first at line {})",
            lines[2] - 2,
            lines[0] - 2
        )]
    );
}

#[test]
fn unknown_names_list_a_few_of_the_defined_ones() {
    let (mut text, _) = networks_file(50, |i| format!("10.0.{i}.0/24"));
    text.push_str("\n[[template]]\nname = \"t\"\n\n[[container]]\nname = \"c\"\ntemplate = \"t\"\nnetwork = \"lan\"\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].ends_with(
            "container \"c\" refers to unknown network \"lan\" (defined: n0, n1, n10, n11, n12, \
             n13, n14, n15, n16, n17, … (50 in all))"
        ),
        "{}",
        errs[0]
    );
}

/// Found by tests/fuzz_config.rs: an invalid network name with a line break, listed raw in
/// another diagnostic's "defined: …" hint, split that diagnostic over two lines.
#[test]
fn defined_names_in_hints_are_escaped() {
    let errs = errors("[[network]]\nname=\"\\n\"\n[[vm]]\n[[vm.nic]]\nnetwork=\"\"");
    let hint = errs
        .iter()
        .find(|e| e.contains("refers to unknown network"))
        .unwrap_or_else(|| panic!("no unknown-network error in {errs:?}"));
    assert!(
        hint.ends_with(r#"refers to unknown network "" (defined: \n)"#),
        "{hint}"
    );
    assert!(errs.iter().all(|e| !e.contains('\n')), "{errs:?}");
}

/// Found by tests/fuzz_config.rs: the part of a CIDR that is not an address (or prefix) was
/// quoted raw, so a tab or line break in it went into the diagnostic as it was.
#[test]
fn bad_cidr_parts_are_escaped() {
    let errs = errors("[host.management]\naddress=\"\t/\"");
    assert!(
        errs.iter()
            .any(|e| e
                .contains(r#"address "\t/" in [host.management] has an invalid address "\t";"#)),
        "{errs:?}"
    );
    let errs = errors("[host.management]\naddress=\"10.0.0.1/\\n\"");
    assert!(
        errs.iter()
            .any(|e| e.contains(r#"has an invalid prefix length "\n"; expected 0 to 32"#)),
        "{errs:?}"
    );
}

/// Found by tests/fuzz_config.rs: host.toml took an address on a vlan network, which netd
/// never configures and `net.create` refuses for the same network.
#[test]
fn a_vlan_network_takes_no_address() {
    let text = format!(
        "{MINIMAL}\n[[network]]\nname = \"v20\"\nkind = \"vlan\"\nuplink = \"eth2\"\nvlan = 20\naddress = \"192.0.2.10/24\"\n"
    );
    let errs = errors(&text);
    assert_eq!(
        errs,
        [
            "t.toml:13:11: address \"192.0.2.10/24\" in network \"v20\" is not used with kind = \"vlan\"; give the address to the network on top of it"
        ]
    );
    let spec = model::net::NetworkSpec {
        name: "v20".into(),
        kind: model::net::NetworkKind::Vlan,
        uplink: Some("eth2".into()),
        vlan: Some(20),
        vlan_aware: false,
        bond: vec![],
        bond_mode: None,
        subnet: None,
        address: Some("192.0.2.10/24".into()),
        limits: None,
    };
    assert!(
        spec.validate().is_err(),
        "net.create takes what host.toml refuses"
    );
}

/// Found by tests/fuzz_config.rs: an unknown size unit was quoted raw, so a tab or line break
/// in it went into the diagnostic as it was.
#[test]
fn unknown_units_are_escaped() {
    let errs = errors("[[vm]]\nmemory=\"9k\t9\"");
    assert!(
        errs.iter()
            .any(|e| e.contains(r#"has an unknown unit "k\t9"; expected"#)),
        "{errs:?}"
    );
}
