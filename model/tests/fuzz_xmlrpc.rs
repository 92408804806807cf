//! Fuzzing the XML-RPC boundary (testkit::fuzz): the parser on mutated documents, every
//! action's typed decoding on mutated parameters, and the writer (and `Value`'s own decoding)
//! on random values. Seeded with
//! a valid call of every declared action and a valid answer of each. A fixed seed and a small
//! budget here; ci/bench.d/fuzz.sh runs the same tests longer (`CAIRN_FUZZ_ITERS`).

use std::collections::BTreeMap;

use model::xmlrpc::{
    Error, MethodCall, MethodResponse, Value, from_value, parse_call, parse_response, write_call,
    write_response,
};
use testkit::fuzz::actions::{self, Entry};
use testkit::fuzz::value::{self, ValueMutator};
use testkit::fuzz::{Budget, Input, Mutator, Rng, run};

/// Where an error says it is, checked against the document: every error but the element
/// count (a property of the whole document) carries a byte offset inside it, and says it.
fn check_position(e: &Error, len: usize) -> Result<String, String> {
    let (pos, label) = match e {
        Error::Xml { pos, .. } => (*pos, "xml".to_string()),
        Error::Doctype { pos } => (*pos, "doctype".into()),
        Error::Entity { pos, .. } => (*pos, "entity".into()),
        Error::TooDeep { pos, .. } => (*pos, "too deep".into()),
        Error::TooManyElements { .. } => return Ok("too many elements".into()),
        Error::Structure { pos, expected, .. } => (*pos, format!("expected {expected}")),
        Error::ForbiddenChar { pos, place, .. } => (*pos, format!("forbidden char in {place}")),
        Error::BadScalar { pos, kind, .. } => (*pos, format!("bad {kind}")),
    };
    if usize::try_from(pos).map_or(true, |p| p > len) {
        return Err(format!("{e}: byte {pos} is past the end ({len} bytes)"));
    }
    if !e.to_string().contains(&format!("byte {pos}")) {
        return Err(format!("{e}: the message does not give byte {pos}"));
    }
    Ok(label)
}

fn by_name() -> BTreeMap<&'static str, Entry> {
    actions::all()
        .into_iter()
        .map(|e| (e.decl.name, e))
        .collect()
}

/// The parsers' properties on one document: no panic; a refusal says where; an accepted call
/// or response is written and read back unchanged; an accepted call of a declared action
/// passes the decoding properties.
fn check_document(text: &str, entries: &BTreeMap<&str, Entry>) -> Result<String, String> {
    let call_label = match parse_call(text) {
        Ok(call) => {
            let again = parse_call(&write_call(&call))
                .map_err(|e| format!("a written call does not parse: {e}; {call:?}"))?;
            if again != call {
                return Err(format!(
                    "call changed on the way: {call:?} became {again:?}"
                ));
            }
            match entries.get(call.name.as_str()) {
                Some(entry) => entry.check(&call.params)?,
                None => "call of an undeclared method".into(),
            }
        }
        Err(e) => format!("call refused: {}", check_position(&e, text.len())?),
    };
    let response_label = match parse_response(text) {
        Ok(response) => {
            let again = parse_response(&write_response(&response))
                .map_err(|e| format!("a written response does not parse: {e}; {response:?}"))?;
            if again != response {
                return Err(format!(
                    "response changed on the way: {response:?} became {again:?}"
                ));
            }
            "response accepted".to_string()
        }
        Err(e) => format!("response refused: {}", check_position(&e, text.len())?),
    };
    // The label of the parser the document was made for, so outcomes stay countable.
    Ok(if text.contains("methodResponse") {
        response_label
    } else {
        call_label
    })
}

/// Valid documents: a call of every action (with and without its optional parts), a batch,
/// an answer of every action, a fault of every code, and Python's indented style of some.
fn corpus() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(1);
    let calls = actions::valid_calls(&mut rng, 2).unwrap_or_else(|e| panic!("{e}"));
    let mut docs: Vec<String> = calls.iter().map(write_call).collect();
    for entry in actions::all() {
        let result = entry.result(&mut rng).unwrap_or_else(|e| panic!("{e}"));
        docs.push(write_response(&MethodResponse::Ok(result)));
    }
    for code in model::fault::FaultCode::ALL {
        docs.push(write_response(&MethodResponse::Fault {
            code: code.code(),
            message: format!("{} & <more>", code.name()),
        }));
    }
    let indented: Vec<String> = docs
        .iter()
        .step_by(9)
        .map(|d| d.replace("><", ">\n  <"))
        .collect();
    docs.extend(indented);
    docs.into_iter().map(String::into_bytes).collect()
}

const XML_TOKENS: &[&[u8]] = &[
    b"<value>",
    b"</value>",
    b"<struct>",
    b"</struct>",
    b"<member>",
    b"</member>",
    b"<name>",
    b"</name>",
    b"<array><data>",
    b"</data></array>",
    b"<param>",
    b"</param>",
    b"<params/>",
    b"<nil/>",
    b"<ex:nil/>",
    b"<i4>",
    b"<i8>",
    b"<double>",
    b"<base64>",
    b"<dateTime.iso8601>",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?xml version=\"1.0\"?>",
    b"<!DOCTYPE x [<!ENTITY a \"b\">]>",
    b"&amp;",
    b"&lt;",
    b"&#0;",
    b"&#x10FFFF;",
    b"&#xD800;",
    b"&#65;",
    b"&bogus;",
    b" a=\"1\"",
    b" xmlns:ex=\"http://ws.apache.org/xmlrpc/namespaces/extensions\"",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xef\xbf\xbe",
    b"\r\n",
    b"19980717T14:08:55",
    b"1e-07",
    b"nan",
    b"-inf",
    b"AAAA====",
];

#[test]
fn fuzz_xmlrpc_documents() {
    let entries = by_name();
    let seeds = corpus();
    let mutator = Mutator::new(&seeds, XML_TOKENS).with_corpus_words();
    let report = run(
        "xmlrpc documents",
        Budget::from_env(10_000),
        &seeds,
        |rng, seed| mutator.mutate(rng, seed),
        |input: &Vec<u8>| {
            // apid refuses a body that is not UTF-8 before parsing; mutants that break UTF-8
            // still test the parser with the replacement character where the bytes were.
            let text = String::from_utf8_lossy(input);
            check_document(&text, &entries)
        },
    );
    // The mutants reached the decoders of most actions and many parser refusals.
    let accepted = report
        .outcomes
        .keys()
        .filter(|k| k.ends_with(": accepted"))
        .count();
    assert!(accepted >= 30, "{report}: {:?}", report.outcomes);
    assert!(
        report.outcomes.len() >= 100,
        "{report}: {:?}",
        report.outcomes
    );
}

/// A call of one action with some parameters: the decoder's input.
#[derive(Clone)]
struct Params {
    entry: Entry,
    params: Vec<Value>,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.entry.decl.name, self.params)
    }
}

impl Input for Params {
    fn shrink(&self) -> Vec<Params> {
        value::shrink_params(&self.params)
            .into_iter()
            .map(|params| Params {
                entry: self.entry,
                params,
            })
            .collect()
    }
}

#[test]
fn fuzz_action_params() {
    let mut rng = Rng::new(2);
    let mut seeds = Vec::new();
    for entry in actions::all() {
        for full in [true, true, false] {
            let params = entry.seed(&mut rng, full).unwrap_or_else(|e| panic!("{e}"));
            seeds.push(Params { entry, params });
        }
    }
    let all_values: Vec<Value> = seeds.iter().flat_map(|s| s.params.clone()).collect();
    let mutator = ValueMutator::new(&all_values);
    let report = run(
        "action params",
        Budget::from_env(20_000),
        &seeds,
        |rng, seed| Params {
            entry: seed.entry,
            params: mutator.mutate_params(rng, &seed.params),
        },
        |input: &Params| input.entry.check(&input.params),
    );
    // Every action accepted its seeds, and refusals of every kind came up.
    let declared = model::api::declarations().len();
    let accepted = report
        .outcomes
        .keys()
        .filter(|k| k.ends_with(": accepted"))
        .count();
    assert_eq!(accepted, declared, "{report}: {:?}", report.outcomes);
    for kind in [
        "wrong count",
        "wrong type",
        "missing member",
        "unknown member",
        "out of range",
        "unknown variant",
    ] {
        assert!(
            report.outcomes.keys().any(|k| k.ends_with(kind)),
            "no {kind} in {:?}",
            report.outcomes
        );
    }
}

/// The characters XML 1.0 can carry (production `Char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// What the writer promises to make of a value: characters XML cannot carry become U+FFFD,
/// doubles XML-RPC cannot carry become nil, everything else stays.
fn as_written(v: &Value) -> Value {
    let text = |s: &str| -> String {
        s.chars()
            .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
            .collect()
    };
    match v {
        Value::String(s) => Value::String(text(s)),
        Value::Double(d) if !d.is_finite() => Value::Nil,
        Value::Struct(s) => {
            Value::Struct(s.iter().map(|(k, v)| (text(k), as_written(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(as_written).collect()),
        other => other.clone(),
    }
}

/// A value for the writer, with how it shrinks.
#[derive(Clone, Debug)]
struct Written(Value);

impl Input for Written {
    fn shrink(&self) -> Vec<Written> {
        value::shrink_value(&self.0)
            .into_iter()
            .map(Written)
            .collect()
    }
}

/// `v` with struct member names made of characters XML can carry: two names that differ only
/// in characters the writer replaces would be written as one name twice, which the reader
/// rightly refuses (no API result has such names: they are daemon, field or object names).
fn writable_names(v: Value) -> Value {
    match v {
        Value::Struct(s) => Value::Struct(
            s.into_iter()
                .map(|(k, v)| {
                    (
                        k.chars().filter(|c| is_xml_char(*c)).collect(),
                        writable_names(v),
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(writable_names).collect()),
        other => other,
    }
}

fn has_non_finite(v: &Value) -> bool {
    match v {
        Value::Double(d) => !d.is_finite(),
        Value::Struct(s) => s.values().any(has_non_finite),
        Value::Array(a) => a.iter().any(has_non_finite),
        _ => false,
    }
}

#[test]
fn fuzz_writer_round_trip() {
    let report = run(
        "xmlrpc writer",
        Budget::from_env(4_000),
        &[Written(Value::Nil)],
        |rng, _| Written(writable_names(value::random_value(rng, 4))),
        |Written(v)| {
            // A batch's calls are decoded as `Value`s first: that must change nothing (a finite
            // value comes back as it was, a NaN or infinity is refused).
            match (from_value::<Value>(v.clone()), has_non_finite(v)) {
                (Ok(back), false) if back == *v => {}
                (Err(_), true) => {}
                (other, _) => return Err(format!("{v:?} decoded as a Value is {other:?}")),
            }
            let expected = as_written(v);
            let call = MethodCall {
                name: "fuzz.write".into(),
                params: vec![v.clone()],
            };
            let read = parse_call(&write_call(&call))
                .map_err(|e| format!("the reader refuses a written call: {e}"))?;
            if read.params != [expected.clone()] {
                return Err(format!("written {:?}, read back {:?}", v, read.params));
            }
            let response = MethodResponse::Ok(v.clone());
            let read = parse_response(&write_response(&response))
                .map_err(|e| format!("the reader refuses a written response: {e}"))?;
            if read != MethodResponse::Ok(expected) {
                return Err(format!("written {v:?}, read back {read:?}"));
            }
            Ok(v.type_name().to_string())
        },
    );
    assert!(
        report.outcomes.len() >= 10,
        "{report}: {:?}",
        report.outcomes
    );
}
