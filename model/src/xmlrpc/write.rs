//! Writing XML-RPC documents. Output is compact and deterministic (struct members sorted by
//! name), which keeps tests and captured traffic comparable.

use std::fmt::Write as _;

use base64::Engine as _;

use super::parse::{BASE64, is_xml_char};
use super::{MethodCall, MethodResponse, Value};

const PROLOGUE: &str = "<?xml version=\"1.0\"?>\n";

pub fn write_call(call: &MethodCall) -> String {
    let mut out = String::from(PROLOGUE);
    out.push_str("<methodCall><methodName>");
    escape_into(&mut out, &call.name);
    out.push_str("</methodName><params>");
    for p in &call.params {
        out.push_str("<param>");
        write_value(&mut out, p);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>\n");
    out
}

pub fn write_response(response: &MethodResponse) -> String {
    let mut out = String::from(PROLOGUE);
    out.push_str("<methodResponse>");
    match response {
        MethodResponse::Ok(v) => {
            out.push_str("<params><param>");
            write_value(&mut out, v);
            out.push_str("</param></params>");
        }
        MethodResponse::Fault { code, message } => {
            let fault = Value::structure([
                ("faultCode", Value::Int(*code)),
                ("faultString", Value::String(message.clone())),
            ]);
            out.push_str("<fault>");
            write_value(&mut out, &fault);
            out.push_str("</fault>");
        }
    }
    out.push_str("</methodResponse>\n");
    out
}

/// Appends `<value>…</value>`.
pub fn write_value(out: &mut String, value: &Value) {
    out.push_str("<value>");
    match value {
        Value::Int(i) => {
            let _ = write!(out, "<int>{i}</int>");
        }
        Value::I8(i) => {
            let _ = write!(out, "<i8>{i}</i8>");
        }
        Value::Bool(b) => {
            let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
        }
        Value::String(s) => {
            out.push_str("<string>");
            escape_into(out, s);
            out.push_str("</string>");
        }
        Value::Double(d) if d.is_finite() => {
            // Display for f64 never uses exponent notation, which the spec does not allow.
            let _ = write!(out, "<double>{d}</double>");
        }
        // XML-RPC has no NaN or infinity, and our own reader (like the spec) refuses them; "no
        // number" is the honest answer a client can read.
        Value::Double(_) => out.push_str("<nil/>"),
        Value::DateTime(s) => {
            out.push_str("<dateTime.iso8601>");
            escape_into(out, s);
            out.push_str("</dateTime.iso8601>");
        }
        Value::Base64(bytes) => {
            out.push_str("<base64>");
            out.push_str(&BASE64.encode(bytes));
            out.push_str("</base64>");
        }
        Value::Struct(members) => {
            out.push_str("<struct>");
            for (name, v) in members {
                out.push_str("<member><name>");
                escape_into(out, name);
                out.push_str("</name>");
                write_value(out, v);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for v in items {
                write_value(out, v);
            }
            out.push_str("</data></array>");
        }
        Value::Nil => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

/// Escapes markup characters. Characters XML 1.0 cannot carry at all (NUL and most other C0
/// controls, U+FFFE, U+FFFF) become U+FFFD, so that a stray byte in, say, a guest's console
/// output cannot make the whole response unreadable: a character reference such as `&#0;` would
/// be no better, since conforming readers (Python's xmlrpc.client, and ours) refuse it too.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            // A literal CR would be normalised to LF by the reader.
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
}
