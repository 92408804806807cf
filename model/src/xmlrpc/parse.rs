//! Reading XML-RPC documents: first a small element tree under hard limits, then a strict walk
//! of that tree.

use base64::Engine as _;
use quick_xml::events::Event;
use quick_xml::reader::Reader;

use super::{Error, Limits, MethodCall, MethodResponse, Struct, Value};

/// Parses a `<methodCall>` with the default limits.
pub fn parse_call(xml: &str) -> Result<MethodCall, Error> {
    parse_call_with(xml, &Limits::default())
}

/// Parses a `<methodResponse>` with the default limits.
pub fn parse_response(xml: &str) -> Result<MethodResponse, Error> {
    parse_response_with(xml, &Limits::default())
}

pub fn parse_call_with(xml: &str, limits: &Limits) -> Result<MethodCall, Error> {
    let root = build_tree(xml, limits)?;
    expect_name(&root, "methodCall")?;
    no_text(&root)?;
    let mut children = root.children.iter();
    let name_el = match children.next() {
        Some(el) if el.name == "methodName" => el,
        Some(el) => return Err(structure(el.pos, "<methodName>", found(el))),
        None => {
            return Err(structure(
                root.pos,
                "<methodName> inside <methodCall>",
                "nothing",
            ));
        }
    };
    leaf(name_el)?;
    let name = name_el.text.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:/".contains(c))
    {
        return Err(Error::BadScalar {
            pos: name_el.pos,
            kind: "method name",
            text: name.into(),
        });
    }
    let params = match children.next() {
        Some(el) if el.name == "params" => params(el, limits)?,
        Some(el) => return Err(structure(el.pos, "<params> or </methodCall>", found(el))),
        None => Vec::new(),
    };
    if let Some(el) = children.next() {
        return Err(structure(el.pos, "</methodCall>", found(el)));
    }
    Ok(MethodCall {
        name: name.to_string(),
        params,
    })
}

pub fn parse_response_with(xml: &str, limits: &Limits) -> Result<MethodResponse, Error> {
    let root = build_tree(xml, limits)?;
    expect_name(&root, "methodResponse")?;
    no_text(&root)?;
    let body = match root.children.as_slice() {
        [one] => one,
        [] => {
            return Err(structure(
                root.pos,
                "<params> or <fault>",
                "an empty <methodResponse>",
            ));
        }
        [_, extra, ..] => return Err(structure(extra.pos, "</methodResponse>", found(extra))),
    };
    match body.name.as_str() {
        "params" => {
            let mut values = params(body, limits)?;
            match values.len() {
                1 => Ok(MethodResponse::Ok(values.remove(0))),
                n => Err(structure(
                    body.pos,
                    "exactly one <param> in a response",
                    format!("{n}"),
                )),
            }
        }
        "fault" => {
            no_text(body)?;
            let value_el = only_child(body, "value")?;
            let fault = value(value_el, 0, limits)?;
            let Value::Struct(members) = &fault else {
                return Err(structure(
                    value_el.pos,
                    "a struct inside <fault>",
                    fault.type_name(),
                ));
            };
            let code = match members.get("faultCode") {
                Some(Value::Int(c)) => *c,
                Some(Value::I8(c)) => i32::try_from(*c).map_err(|_| Error::BadScalar {
                    pos: value_el.pos,
                    kind: "faultCode",
                    text: c.to_string(),
                })?,
                Some(other) => {
                    return Err(structure(
                        value_el.pos,
                        "an int faultCode",
                        other.type_name(),
                    ));
                }
                None => return Err(structure(value_el.pos, "a faultCode member", "none")),
            };
            let message = match members.get("faultString") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(structure(
                        value_el.pos,
                        "a string faultString",
                        other.type_name(),
                    ));
                }
                None => return Err(structure(value_el.pos, "a faultString member", "none")),
            };
            Ok(MethodResponse::Fault { code, message })
        }
        _ => Err(structure(body.pos, "<params> or <fault>", found(body))),
    }
}

/// One element of the document. Text of all kinds (plain, CDATA, references) is concatenated;
/// whether text is allowed at all is decided by the walk, which knows the element's role.
#[derive(Debug)]
struct Element {
    name: String,
    pos: u64,
    children: Vec<Element>,
    text: String,
}

fn build_tree(xml: &str, limits: &Limits) -> Result<Element, Error> {
    // Three elements per level of value nesting (<value><array><data>), plus the envelope.
    let max_element_depth = limits.max_depth.saturating_mul(3).saturating_add(8);
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    // quick-xml does not check characters, so every byte the reader moves past is checked here
    // (once: the cursor only moves forward), whether it is text, CDATA, a tag or a comment.
    let mut unchecked = xml.char_indices().peekable();
    loop {
        let pos = reader.buffer_position();
        let event = reader.read_event().map_err(|e| Error::Xml {
            pos: reader.error_position(),
            message: e.to_string(),
        })?;
        let end = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        while let Some((at, c)) = unchecked.next_if(|(at, _)| *at < end) {
            if !is_xml_char(c) {
                let place = match (&event, stack.last()) {
                    (Event::Text(_) | Event::CData(_), Some(el)) => format!("<{}>", el.name),
                    (Event::Comment(_), _) => "a comment".into(),
                    (_, Some(el)) => format!("a tag inside <{}>", el.name),
                    (_, None) => "the prolog".into(),
                };
                return Err(Error::ForbiddenChar {
                    pos: at as u64,
                    what: describe(c),
                    place,
                });
            }
        }
        let (start, empty) = match event {
            Event::Start(s) => (s, false),
            Event::Empty(s) => (s, true),
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches the open one.
                let Some(done) = stack.pop() else {
                    return Err(Error::Xml {
                        pos,
                        message: "end tag without a start tag".into(),
                    });
                };
                attach(&mut stack, &mut root, done);
                continue;
            }
            Event::Text(t) => {
                add_text(&mut stack, pos, &t.xml10_content())?;
                continue;
            }
            Event::CData(c) => {
                add_text(&mut stack, pos, &c.xml10_content())?;
                continue;
            }
            Event::GeneralRef(r) => {
                let ch = resolve_reference(&r, pos, &stack)?;
                add_text(&mut stack, pos, ch.encode_utf8(&mut [0u8; 4]))?;
                continue;
            }
            Event::DocType(_) => return Err(Error::Doctype { pos }),
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
            Event::Eof => break,
        };
        if root.is_some() {
            return Err(structure(
                pos,
                "the end of the document",
                format!("<{}>", start.name().0),
            ));
        }
        count += 1;
        if count > limits.max_elements {
            return Err(Error::TooManyElements {
                limit: limits.max_elements,
            });
        }
        if stack.len() >= max_element_depth {
            return Err(Error::TooDeep {
                pos,
                limit: limits.max_depth,
            });
        }
        // Attributes carry nothing in XML-RPC (at most namespace declarations), but they must
        // still be well-formed.
        for attr in start.attributes() {
            attr.map_err(|e| Error::Xml {
                pos,
                message: e.to_string(),
            })?;
        }
        let el = Element {
            name: start.name().0.to_string(),
            pos,
            children: Vec::new(),
            text: String::new(),
        };
        if empty {
            attach(&mut stack, &mut root, el);
        } else {
            stack.push(el);
        }
    }
    if let Some(open) = stack.last() {
        return Err(Error::Xml {
            pos: xml.len() as u64,
            message: format!("document ends inside <{}>", open.name),
        });
    }
    root.ok_or_else(|| {
        structure(
            xml.len() as u64,
            "a root element",
            "the end of the document",
        )
    })
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn add_text(stack: &mut [Element], pos: u64, text: &str) -> Result<(), Error> {
    match stack.last_mut() {
        Some(el) => el.text.push_str(text),
        None if text.trim().is_empty() => {}
        None => {
            return Err(structure(
                pos,
                "an element",
                "text outside the root element",
            ));
        }
    }
    Ok(())
}

fn resolve_reference(
    r: &quick_xml::events::BytesRef<'_>,
    pos: u64,
    stack: &[Element],
) -> Result<char, Error> {
    let bad = || Error::Entity {
        pos,
        name: r.to_string(),
    };
    if let Some(number) = r.strip_prefix('#') {
        // Parsed here rather than by quick-xml, which accepts &#1; and &#xFFFE; — characters a
        // conforming XML reader refuses and that D-Bus refuses too (a NUL ends its connection).
        let code = match number.strip_prefix('x') {
            Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                u32::from_str_radix(hex, 16).ok()
            }
            None if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
                number.parse::<u32>().ok()
            }
            _ => return Err(bad()),
        };
        let name: &str = r;
        let forbidden = |what: String| Error::ForbiddenChar {
            pos,
            what,
            place: match stack.last() {
                Some(el) => format!("<{}>", el.name),
                None => "the prolog".into(),
            },
        };
        return match code.map(|n| (n, char::from_u32(n))) {
            Some((_, Some(c))) if is_xml_char(c) => Ok(c),
            Some((_, Some(c))) => Err(forbidden(format!("&{name}; ({})", describe(c)))),
            Some((n, None)) => Err(forbidden(format!("&{name}; (U+{n:04X}, not a character)"))),
            None => Err(forbidden(format!("&{name}; (beyond U+10FFFF)"))),
        };
    }
    match &**r {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        _ => Err(bad()),
    }
}

/// The characters XML 1.0 allows (its production `Char`). Rust strings cannot hold surrogates,
/// so what is left to refuse is most C0 controls, U+FFFE and U+FFFF.
pub(super) fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

/// Names a character XML 1.0 refuses, for an error message.
fn describe(c: char) -> String {
    let n = c as u32;
    let kind = match n {
        0 => "NUL",
        0x1..=0x1F => "a control character",
        _ => "a noncharacter",
    };
    format!("U+{n:04X} ({kind})")
}

fn structure(pos: u64, expected: impl Into<String>, found: impl Into<String>) -> Error {
    Error::Structure {
        pos,
        expected: expected.into(),
        found: found.into(),
    }
}

fn found(el: &Element) -> String {
    format!("<{}>", el.name)
}

fn expect_name(el: &Element, name: &str) -> Result<(), Error> {
    if el.name == name {
        Ok(())
    } else {
        Err(structure(el.pos, format!("<{name}>"), found(el)))
    }
}

/// Containers may hold whitespace between their elements, nothing else.
fn no_text(el: &Element) -> Result<(), Error> {
    if el.text.trim().is_empty() {
        Ok(())
    } else {
        Err(structure(
            el.pos,
            format!("only elements inside <{}>", el.name),
            "text",
        ))
    }
}

/// Scalars hold text only.
fn leaf(el: &Element) -> Result<(), Error> {
    match el.children.first() {
        None => Ok(()),
        Some(child) => Err(structure(
            child.pos,
            format!("text inside <{}>", el.name),
            found(child),
        )),
    }
}

fn only_child<'a>(el: &'a Element, name: &str) -> Result<&'a Element, Error> {
    match el.children.as_slice() {
        [one] if one.name == name => Ok(one),
        [other] => Err(structure(
            other.pos,
            format!("<{name}> inside <{}>", el.name),
            found(other),
        )),
        [] => Err(structure(
            el.pos,
            format!("<{name}> inside <{}>", el.name),
            "nothing",
        )),
        [_, extra, ..] => Err(structure(
            extra.pos,
            format!("</{}>", el.name),
            found(extra),
        )),
    }
}

fn params(el: &Element, limits: &Limits) -> Result<Vec<Value>, Error> {
    no_text(el)?;
    el.children
        .iter()
        .map(|param| {
            expect_name(param, "param")?;
            no_text(param)?;
            value(only_child(param, "value")?, 0, limits)
        })
        .collect()
}

/// Reads a `<value>` element; `depth` counts the arrays and structs around it.
fn value(el: &Element, depth: usize, limits: &Limits) -> Result<Value, Error> {
    expect_name(el, "value")?;
    let typed = match el.children.as_slice() {
        // An untyped value is a string, and its text is kept exactly.
        [] => return Ok(Value::String(el.text.clone())),
        [one] => one,
        [_, extra, ..] => {
            return Err(structure(
                extra.pos,
                "one type element inside <value>",
                found(extra),
            ));
        }
    };
    no_text(el)?;
    let bad = |kind: &'static str, text: &str| Error::BadScalar {
        pos: typed.pos,
        kind,
        text: text.chars().take(64).collect(),
    };
    let nested = |typed: &Element| {
        if depth + 1 > limits.max_depth {
            Err(Error::TooDeep {
                pos: typed.pos,
                limit: limits.max_depth,
            })
        } else {
            no_text(typed)
        }
    };
    let text = typed.text.as_str();
    match typed.name.as_str() {
        "int" | "i4" => {
            leaf(typed)?;
            text.trim()
                .parse()
                .map(Value::Int)
                .map_err(|_| bad("int", text))
        }
        "i8" => {
            leaf(typed)?;
            text.trim()
                .parse()
                .map(Value::I8)
                .map_err(|_| bad("i8", text))
        }
        "boolean" => {
            leaf(typed)?;
            match text.trim() {
                "1" => Ok(Value::Bool(true)),
                "0" => Ok(Value::Bool(false)),
                _ => Err(bad("boolean (0 or 1)", text)),
            }
        }
        "string" => {
            leaf(typed)?;
            Ok(Value::String(text.to_string()))
        }
        "double" => {
            leaf(typed)?;
            parse_double(text.trim())
                .map(Value::Double)
                .ok_or_else(|| bad("double (a finite decimal number)", text))
        }
        "dateTime.iso8601" => {
            leaf(typed)?;
            let t = text.trim();
            if is_datetime(t) {
                Ok(Value::DateTime(t.into()))
            } else {
                Err(bad(
                    "dateTime.iso8601 (YYYYMMDDTHH:MM:SS, optionally YYYY-MM-DD and Z or ±HH:MM)",
                    text,
                ))
            }
        }
        "base64" => {
            leaf(typed)?;
            // Encoders wrap lines (Python every 76 characters); the line breaks carry no data.
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            BASE64
                .decode(compact.as_bytes())
                .map(Value::Base64)
                .map_err(|_| bad("base64", text))
        }
        "nil" | "ex:nil" => {
            leaf(typed)?;
            if text.trim().is_empty() {
                Ok(Value::Nil)
            } else {
                Err(bad("nil", text))
            }
        }
        "array" => {
            nested(typed)?;
            let data = only_child(typed, "data")?;
            no_text(data)?;
            data.children
                .iter()
                .map(|v| value(v, depth + 1, limits))
                .collect::<Result<_, _>>()
                .map(Value::Array)
        }
        "struct" => {
            nested(typed)?;
            let mut members = Struct::new();
            for member in &typed.children {
                expect_name(member, "member")?;
                no_text(member)?;
                let (name_el, value_el) = match member.children.as_slice() {
                    [n, v] => (n, v),
                    [] => {
                        return Err(structure(
                            member.pos,
                            "<name> and <value> inside <member>",
                            "nothing",
                        ));
                    }
                    [one] => {
                        return Err(structure(
                            member.pos,
                            "<name> and <value> inside <member>",
                            found(one),
                        ));
                    }
                    [_, _, extra, ..] => {
                        return Err(structure(extra.pos, "</member>", found(extra)));
                    }
                };
                expect_name(name_el, "name")?;
                leaf(name_el)?;
                let v = value(value_el, depth + 1, limits)?;
                if members.insert(name_el.text.clone(), v).is_some() {
                    return Err(structure(
                        name_el.pos,
                        "unique member names",
                        format!("{:?} twice", name_el.text),
                    ));
                }
            }
            Ok(Value::Struct(members))
        }
        _ => Err(structure(
            typed.pos,
            "a type inside <value> (int, i4, i8, boolean, string, double, dateTime.iso8601, base64, struct, array, nil)",
            found(typed),
        )),
    }
}

/// A `<double>`: `[+-]digits[.digits]`, as the spec has it, plus an exponent (`1e-07`), which
/// Python's xmlrpc.client writes for small and large numbers. Rust's own parser would also take
/// `nan`, `inf`, `infinity` and `1e999` (= inf); none of those is a number XML-RPC can carry.
fn parse_double(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    t.parse::<f64>().ok().filter(|d| d.is_finite())
}

/// A `<dateTime.iso8601>` as clients send it: `YYYYMMDDTHH:MM:SS` (the spec's example and what
/// Python's xmlrpc.client writes), the date also as `YYYY-MM-DD`, and an optional zone `Z` or
/// `±HH:MM`. Fields must be in range (month 1–12, the day within its month, second up to 60).
fn is_datetime(t: &str) -> bool {
    let b = t.as_bytes();
    let num = |s: &[u8]| -> Option<u32> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        s.iter().try_fold(0u32, |n, d| {
            n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        })
    };
    let (year, month, day, rest) = match b {
        [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2, rest @ ..]
        | [y1, y2, y3, y4, m1, m2, d1, d2, rest @ ..] => {
            ([*y1, *y2, *y3, *y4], [*m1, *m2], [*d1, *d2], rest)
        }
        _ => return false,
    };
    let (Some(year), Some(month), Some(day)) = (num(&year), num(&month), num(&day)) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > month_days {
        return false;
    }
    let hms = |s: &[u8], max_h: u32, max_s: Option<u32>| -> bool {
        match (s, max_s) {
            ([h1, h2, b':', m1, m2, b':', s1, s2], Some(max_s)) => {
                num(&[*h1, *h2]).is_some_and(|h| h <= max_h)
                    && num(&[*m1, *m2]).is_some_and(|m| m <= 59)
                    && num(&[*s1, *s2]).is_some_and(|s| s <= max_s)
            }
            ([h1, h2, b':', m1, m2], None) => {
                num(&[*h1, *h2]).is_some_and(|h| h <= max_h)
                    && num(&[*m1, *m2]).is_some_and(|m| m <= 59)
            }
            _ => false,
        }
    };
    let Some((b'T', rest)) = rest.split_first() else {
        return false;
    };
    if rest.len() < 8 || !hms(&rest[..8], 23, Some(60)) {
        return false;
    }
    match &rest[8..] {
        [] | [b'Z'] => true,
        [b'+' | b'-', zone @ ..] => hms(zone, 23, None),
        _ => false,
    }
}

/// Standard alphabet; padding optional on input because some encoders drop it.
pub(super) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
