//! Mutations of XML-RPC values as trees, and random values for the writer: a byte mutator
//! mostly breaks the XML, which tests the parser; these keep the document valid and break the
//! *shape* a method expects, which tests the typed decoding behind it.

use model::xmlrpc::{Struct, Value};

use super::Rng;

/// Strings at the edges of what the API's checks take: empty, long, unusual characters,
/// characters XML cannot carry, and text shaped like the values the API wants.
pub const EDGE_STRINGS: &[&str] = &[
    "",
    " ",
    "a",
    "lan",
    "web1",
    "eth0",
    "-",
    "a-very-long-name-beyond-fifteen",
    "../../etc/passwd",
    "/",
    "/tmp/cairn-fuzz",
    "10.0.0.1/24",
    "10.0.0.0/33",
    "::1/128",
    "300.1.1.1",
    "52:54:00:12:34:56",
    "ff:ff:ff:ff:ff:ff",
    "sha256:00",
    "0",
    "-1",
    "4096",
    "1e3",
    "true",
    "active-backup",
    "bridged",
    "routed",
    "vlan",
    "veth",
    "tap",
    "system.multicall",
    "host.info",
    "é😀",
    "\u{FFFD}",
    "a\nb",
    "a\rb",
    "\t",
    "x\u{0}y",
    "\u{1}",
    "\u{FFFE}",
    "]]>",
    "<b>&amp;</b>",
];

const EDGE_INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    7,
    15,
    16,
    100,
    101,
    255,
    256,
    4094,
    4095,
    4096,
    65535,
    65536,
    i32::MAX as i64,
    i32::MIN as i64,
    u32::MAX as i64,
    u32::MAX as i64 + 1,
    i64::MAX,
    i64::MIN,
];

const DATETIMES: &[&str] = &[
    "19980717T14:08:55",
    "2024-02-29T23:59:60Z",
    "20000101T00:00:00+05:30",
];

/// An integer at some edge, as `<int>` when it fits and `<i8>` otherwise (or `<i8>` anyway,
/// which clients may send for small numbers too).
fn edge_int(rng: &mut Rng) -> Value {
    let n = EDGE_INTS[rng.below(EDGE_INTS.len())];
    match i32::try_from(n) {
        Ok(i) if !rng.chance(1, 4) => Value::Int(i),
        _ => Value::I8(n),
    }
}

/// A scalar or an empty container of a random type.
pub fn random_scalar(rng: &mut Rng) -> Value {
    match rng.below(11) {
        0 | 1 => edge_int(rng),
        2 => Value::Bool(rng.chance(1, 2)),
        3 | 4 => Value::String(EDGE_STRINGS[rng.below(EDGE_STRINGS.len())].to_string()),
        5 => Value::Double([0.0, -1.5, 1e300, 2.5e-7, 12_500_000.0][rng.below(5)]),
        6 => Value::DateTime(DATETIMES[rng.below(DATETIMES.len())].to_string()),
        7 => Value::Base64(vec![0, 0xFF, b'a']),
        8 => Value::Nil,
        9 => Value::Struct(Struct::new()),
        _ => Value::Array(Vec::new()),
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Struct(s) => s.values().map(count_nodes).sum(),
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        _ => 0,
    }
}

/// The `n`th node in pre-order (0 is `v` itself); `None` past the end.
fn nth_node(v: &mut Value, n: usize) -> Option<&mut Value> {
    if n == 0 {
        return Some(v);
    }
    let mut left = n - 1;
    let children: Vec<&mut Value> = match v {
        Value::Struct(s) => s.values_mut().collect(),
        Value::Array(a) => a.iter_mut().collect(),
        _ => return None,
    };
    for child in children {
        let size = count_nodes(child);
        if left < size {
            return nth_node(child, left);
        }
        left -= size;
    }
    None
}

/// Every node of `v`, cloned: material to splice into other trees.
pub fn subtrees(v: &Value, out: &mut Vec<Value>) {
    out.push(v.clone());
    match v {
        Value::Struct(s) => s.values().for_each(|c| subtrees(c, out)),
        Value::Array(a) => a.iter().for_each(|c| subtrees(c, out)),
        _ => {}
    }
}

/// Member names to add or rename to: the corpus's own, plus ones no type has.
pub fn member_names(values: &[Value]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Struct(s) => {
                for (k, c) in s {
                    out.push(k.clone());
                    walk(c, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = vec!["bogus".to_string(), String::new(), "Name".to_string()];
    values.iter().for_each(|v| walk(v, &mut out));
    out.sort();
    out.dedup();
    out
}

/// Shape mutations of XML-RPC values: `pool` holds subtrees to splice in, `names` member names.
#[derive(Debug, Clone, Default)]
pub struct ValueMutator {
    pub pool: Vec<Value>,
    pub names: Vec<String>,
}

impl ValueMutator {
    /// A mutator whose splices and names come from `corpus`.
    pub fn new(corpus: &[Value]) -> ValueMutator {
        let mut pool = Vec::new();
        corpus.iter().for_each(|v| subtrees(v, &mut pool));
        ValueMutator {
            pool,
            names: member_names(corpus),
        }
    }

    fn name(&self, rng: &mut Rng) -> String {
        rng.pick(&self.names).cloned().unwrap_or_default()
    }

    /// One to three mutations of a method's parameter list.
    pub fn mutate_params(&self, rng: &mut Rng, params: &[Value]) -> Vec<Value> {
        let mut out = params.to_vec();
        for _ in 0..1 + rng.below(3) {
            match rng.below(10) {
                // The parameter count: one too few, one too many.
                0 => {
                    out.pop();
                }
                1 => {
                    let at = rng.below(out.len() + 1);
                    out.insert(at, random_scalar(rng));
                }
                _ if out.is_empty() => out.push(random_scalar(rng)),
                _ => {
                    let i = rng.below(out.len());
                    self.mutate(rng, &mut out[i]);
                }
            }
        }
        out
    }

    /// One mutation somewhere in `v`.
    pub fn mutate(&self, rng: &mut Rng, v: &mut Value) {
        let n = rng.below(count_nodes(v));
        let Some(node) = nth_node(v, n) else {
            return;
        };
        match rng.below(12) {
            0 | 1 => *node = random_scalar(rng),
            2 => {
                if let Some(other) = rng.pick(&self.pool) {
                    *node = other.clone();
                }
            }
            // The same number in the other integer type, or as text.
            3 => {
                *node = match node {
                    Value::Int(i) => Value::I8(i64::from(*i)),
                    Value::I8(i) => Value::String(i.to_string()),
                    Value::String(s) => s.parse().map(Value::Int).unwrap_or(Value::Nil),
                    _ => edge_int(rng),
                }
            }
            4 => {
                if let Value::Int(_) | Value::I8(_) = node {
                    *node = edge_int(rng);
                } else {
                    *node = Value::String(EDGE_STRINGS[rng.below(EDGE_STRINGS.len())].into());
                }
            }
            // One level more: an item in an array, or a one-member struct (an enum variant
            // with data, to the decoder).
            5 => {
                let inner = std::mem::replace(node, Value::Nil);
                *node = if rng.chance(1, 2) {
                    Value::Array(vec![inner])
                } else {
                    Value::Struct(Struct::from([(self.name(rng), inner)]))
                };
            }
            _ => match node {
                Value::Struct(s) => {
                    let keys: Vec<String> = s.keys().cloned().collect();
                    match (rng.below(3), rng.pick(&keys).cloned()) {
                        (0, Some(k)) => {
                            s.remove(&k);
                        }
                        (1, Some(k)) => {
                            if let Some(v) = s.remove(&k) {
                                s.insert(self.name(rng), v);
                            }
                        }
                        _ => {
                            s.insert(self.name(rng), random_scalar(rng));
                        }
                    }
                }
                Value::Array(a) => match rng.below(3) {
                    0 if !a.is_empty() => {
                        let i = rng.below(a.len());
                        a.remove(i);
                    }
                    1 if !a.is_empty() => {
                        let i = rng.below(a.len());
                        let copy = a[i].clone();
                        a.push(copy);
                    }
                    _ => a.push(random_scalar(rng)),
                },
                other => *other = random_scalar(rng),
            },
        }
    }
}

/// Smaller versions of a parameter list: one parameter, member or item less, or one node
/// replaced by nil.
pub fn shrink_params(params: &[Value]) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for i in 0..params.len() {
        let mut fewer = params.to_vec();
        fewer.remove(i);
        out.push(fewer);
    }
    for (i, p) in params.iter().enumerate() {
        for smaller in shrink_value(p) {
            let mut c = params.to_vec();
            c[i] = smaller;
            out.push(c);
        }
    }
    out
}

/// Smaller versions of `v`: a member or item removed, or a child replaced by something
/// simpler.
pub fn shrink_value(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    match v {
        Value::Struct(s) => {
            for k in s.keys() {
                let mut c = s.clone();
                c.remove(k);
                out.push(Value::Struct(c));
            }
            for (k, child) in s {
                for smaller in shrink_value(child) {
                    let mut c = s.clone();
                    c.insert(k.clone(), smaller);
                    out.push(Value::Struct(c));
                }
            }
        }
        Value::Array(a) => {
            for i in 0..a.len() {
                let mut c = a.clone();
                c.remove(i);
                out.push(Value::Array(c));
            }
            for (i, child) in a.iter().enumerate() {
                for smaller in shrink_value(child) {
                    let mut c = a.clone();
                    c[i] = smaller;
                    out.push(Value::Array(c));
                }
            }
        }
        Value::String(s) if !s.is_empty() => out.push(Value::String(String::new())),
        Value::Int(i) if *i != 0 => out.push(Value::Int(0)),
        _ => {}
    }
    out
}

/// Characters for random strings: markup, line ends, several planes, and characters XML 1.0
/// cannot carry (the writer must replace those, never emit them).
const CHARS: &[char] = &[
    'a',
    'Z',
    '0',
    ' ',
    '<',
    '>',
    '&',
    '"',
    '\'',
    ';',
    '#',
    ']',
    '\n',
    '\r',
    '\t',
    'é',
    '€',
    '😀',
    '\u{0}',
    '\u{1}',
    '\u{1F}',
    '\u{7F}',
    '\u{85}',
    '\u{D7FF}',
    '\u{E000}',
    '\u{FFFD}',
    '\u{FFFE}',
    '\u{FFFF}',
    '\u{10FFFF}',
];

/// A random string, possibly holding characters XML cannot carry.
pub fn random_string(rng: &mut Rng) -> String {
    (0..rng.below(12))
        .map(|_| CHARS[rng.below(CHARS.len())])
        .collect()
}

/// A random value tree, any type at any level up to `depth` levels of nesting. Doubles are any
/// bit pattern (NaN and infinities too), strings any characters: what the writer is given.
pub fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let kinds = if depth == 0 { 9 } else { 11 };
    match rng.below(kinds) {
        0 => Value::Int(rng.next_u64() as i32),
        1 => Value::I8(rng.next_u64() as i64),
        2 => Value::Bool(rng.chance(1, 2)),
        3 | 4 => Value::String(random_string(rng)),
        5 => Value::Double(if rng.chance(1, 2) {
            f64::from_bits(rng.next_u64())
        } else {
            [0.0, -0.0, 1e-7, 1e300, f64::MIN_POSITIVE, f64::MAX][rng.below(6)]
        }),
        6 => Value::DateTime(DATETIMES[rng.below(DATETIMES.len())].to_string()),
        7 => Value::Base64((0..rng.below(40)).map(|_| rng.next_u64() as u8).collect()),
        8 => Value::Nil,
        9 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Struct(
            (0..rng.below(4))
                .map(|_| (random_string(rng), random_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_can_be_reached_and_mutated() {
        let mut v = Value::structure([
            ("a", Value::Array(vec![Value::Int(1), Value::from("x")])),
            ("b", Value::Nil),
        ]);
        assert_eq!(count_nodes(&v), 5);
        assert_eq!(nth_node(&mut v, 3).cloned(), Some(Value::from("x")));
        assert_eq!(nth_node(&mut v, 4).cloned(), Some(Value::Nil));
        assert_eq!(nth_node(&mut v, 5), None);
        let m = ValueMutator::new(std::slice::from_ref(&v));
        assert!(m.names.contains(&"a".to_string()));
        let mut rng = Rng::new(9);
        let changed = (0..100)
            .filter(|_| {
                let mut c = v.clone();
                m.mutate(&mut rng, &mut c);
                c != v
            })
            .count();
        assert!(changed > 60, "{changed}");
    }

    #[test]
    fn shrinking_makes_smaller_trees() {
        let v = Value::structure([("a", Value::Array(vec![Value::Int(1)]))]);
        let smaller = shrink_value(&v);
        assert!(smaller.contains(&Value::Struct(Struct::new())));
        assert!(smaller.contains(&Value::structure([("a", Value::Array(vec![]))])));
        assert!(smaller.iter().all(|s| count_nodes(s) <= count_nodes(&v)));
    }
}
