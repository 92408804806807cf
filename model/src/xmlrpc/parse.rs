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
    loop {
        let pos = reader.buffer_position();
        let event = reader.read_event().map_err(|e| Error::Xml {
            pos: reader.error_position(),
            message: e.to_string(),
        })?;
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
                let ch = resolve_reference(&r, pos)?;
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

fn resolve_reference(r: &quick_xml::events::BytesRef<'_>, pos: u64) -> Result<char, Error> {
    let bad = || Error::Entity {
        pos,
        name: r.to_string(),
    };
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) => Ok(c),
            _ => Err(bad()),
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
            text.trim()
                .parse()
                .map(Value::Double)
                .map_err(|_| bad("double", text))
        }
        "dateTime.iso8601" => {
            leaf(typed)?;
            let t = text.trim();
            if t.is_empty() {
                Err(bad("dateTime.iso8601", text))
            } else {
                Ok(Value::DateTime(t.into()))
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

/// Standard alphabet; padding optional on input because some encoders drop it.
pub(super) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
