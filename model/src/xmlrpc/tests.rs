use super::*;

fn call(name: &str, params: Vec<Value>) -> MethodCall {
    MethodCall {
        name: name.into(),
        params,
    }
}

fn every_type() -> Value {
    Value::structure([
        ("int", Value::Int(-42)),
        ("i8", Value::I8(1 << 40)),
        ("bool_t", Value::Bool(true)),
        ("bool_f", Value::Bool(false)),
        ("string", Value::from("a <b> & 'c' \"d\"\r\n\tü€😀")),
        ("empty", Value::from("")),
        ("double", Value::Double(-1.5e-7)),
        ("big_double", Value::Double(1e300)),
        ("date", Value::DateTime("19980717T14:08:55".into())),
        ("bytes", Value::Base64((0u8..=255).collect())),
        ("no_bytes", Value::Base64(vec![])),
        ("nil", Value::Nil),
        (
            "array",
            Value::Array(vec![
                Value::Int(1),
                Value::from("two"),
                Value::Array(vec![]),
                Value::Struct(Struct::new()),
            ]),
        ),
    ])
}

#[test]
fn call_round_trips_every_type() {
    let c = call(
        "host.info",
        vec![every_type(), Value::Int(7), Value::from("x")],
    );
    let xml = write_call(&c);
    assert_eq!(parse_call(&xml).unwrap(), c);
}

#[test]
fn response_round_trips() {
    let ok = MethodResponse::Ok(every_type());
    assert_eq!(parse_response(&write_response(&ok)).unwrap(), ok);
    let fault = MethodResponse::Fault {
        code: 101,
        message: "no method <x> & y".into(),
    };
    assert_eq!(parse_response(&write_response(&fault)).unwrap(), fault);
}

#[test]
fn call_without_params_and_with_empty_params() {
    let a =
        parse_call("<methodCall><methodName>system.listMethods</methodName></methodCall>").unwrap();
    assert_eq!(a, call("system.listMethods", vec![]));
    let b = parse_call("<methodCall><methodName> a.b </methodName><params/></methodCall>").unwrap();
    assert_eq!(b, call("a.b", vec![]));
}

/// What Python's xmlrpc.client sends, whitespace and all.
#[test]
fn python_style_request() {
    let xml = "<?xml version='1.0'?>\n<methodCall>\n<methodName>system.methodHelp</methodName>\n<params>\n<param>\n<value><string>host.info</string></value>\n</param>\n<param>\n<value><int>3</int></value>\n</param>\n<param>\n<value><struct>\n<member>\n<name>a</name>\n<value><boolean>1</boolean></value>\n</member>\n</struct></value>\n</param>\n<param>\n<value><array><data>\n<value><double>0.5</double></value>\n<value><nil/></value></data></array></value>\n</param>\n<param>\n<value><base64>\naGVsbG8gd29y\nbGQ=\n</base64></value>\n</param>\n</params>\n</methodCall>\n";
    let c = parse_call(xml).unwrap();
    assert_eq!(c.name, "system.methodHelp");
    assert_eq!(
        c.params,
        vec![
            Value::from("host.info"),
            Value::Int(3),
            Value::structure([("a", Value::Bool(true))]),
            Value::Array(vec![Value::Double(0.5), Value::Nil]),
            Value::Base64(b"hello world".to_vec()),
        ]
    );
}

#[test]
fn untyped_value_is_a_string_kept_verbatim() {
    let xml = "<methodCall><methodName>m</methodName><params><param><value>  hi there </value></param><param><value/></param><param><value></value></param></params></methodCall>";
    let c = parse_call(xml).unwrap();
    assert_eq!(
        c.params,
        vec![Value::from("  hi there "), Value::from(""), Value::from("")]
    );
}

#[test]
fn scalar_spellings() {
    let one = |inner: &str| {
        let xml = format!(
            "<methodResponse><params><param><value>{inner}</value></param></params></methodResponse>"
        );
        match parse_response(&xml) {
            Ok(MethodResponse::Ok(v)) => Ok(v),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e),
        }
    };
    assert_eq!(one("<i4> +12 </i4>").unwrap(), Value::Int(12));
    assert_eq!(one("<int>-2147483648</int>").unwrap(), Value::Int(i32::MIN));
    assert!(one("<int>2147483648</int>").is_err());
    assert_eq!(
        one("<i8>9223372036854775807</i8>").unwrap(),
        Value::I8(i64::MAX)
    );
    assert_eq!(one("<boolean> 0 </boolean>").unwrap(), Value::Bool(false));
    assert!(one("<boolean>true</boolean>").is_err());
    assert!(one("<boolean>2</boolean>").is_err());
    assert_eq!(one("<double>1</double>").unwrap(), Value::Double(1.0));
    assert!(one("<double>one</double>").is_err());
    assert!(one("<int></int>").is_err());
    assert!(one("<dateTime.iso8601> </dateTime.iso8601>").is_err());
    assert!(one("<base64>!!!!</base64>").is_err());
    assert_eq!(
        one("<base64>aGk</base64>").unwrap(),
        Value::Base64(b"hi".to_vec())
    );
    assert_eq!(one("<string/>").unwrap(), Value::from(""));
    assert_eq!(
        one("<string>a&lt;&#x41;&#66;&amp;&quot;&apos;&gt;</string>").unwrap(),
        Value::from("a<AB&\"'>")
    );
    assert_eq!(
        one("<string><![CDATA[<raw> & ]]>x</string>").unwrap(),
        Value::from("<raw> & x")
    );
    assert_eq!(
        one("<string>a<!-- note -->b</string>").unwrap(),
        Value::from("ab")
    );
    assert_eq!(one("<ex:nil/>").unwrap(), Value::Nil);
    assert!(one("<nil>x</nil>").is_err());
}

#[test]
fn carriage_returns_survive_and_controls_are_replaced() {
    let c = call("m", vec![Value::from("a\r\nb\u{1}c")]);
    let back = parse_call(&write_call(&c)).unwrap();
    assert_eq!(back.params, vec![Value::from("a\r\nb\u{FFFD}c")]);
}

fn assert_structure(xml: &str, expected_fragment: &str) {
    match parse_call(xml) {
        Err(Error::Structure { expected, .. }) => {
            assert!(
                expected.contains(expected_fragment),
                "expected {expected_fragment:?} in {expected:?}"
            )
        }
        other => panic!("{xml}: expected a structure error, got {other:?}"),
    }
}

#[test]
fn structure_errors_say_what_was_expected() {
    assert_structure("<methodResponse/>", "<methodCall>");
    assert_structure("<methodCall/>", "<methodName>");
    assert_structure("<methodCall><params/></methodCall>", "<methodName>");
    assert_structure(
        "<methodCall><methodName>m</methodName><param/></methodCall>",
        "<params>",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params/><params/></methodCall>",
        "</methodCall>",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params><value/></params></methodCall>",
        "<param>",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params><param/></params></methodCall>",
        "<value>",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params><param><value><int>1</int><int>2</int></value></param></params></methodCall>",
        "one type element",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params><param><value><float>1</float></value></param></params></methodCall>",
        "a type inside <value>",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params><param><value>x<int>1</int></value></param></params></methodCall>",
        "only elements",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params><param><value><array><value/></array></value></param></params></methodCall>",
        "<data>",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params><param><value><struct><member><name>a</name></member></struct></value></param></params></methodCall>",
        "<name> and <value>",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params><param><value><struct><member><value/><name>a</name></member></struct></value></param></params></methodCall>",
        "<name>",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName><params><param><value><struct><member><name>a</name><value/></member><member><name>a</name><value/></member></struct></value></param></params></methodCall>",
        "unique member names",
    );
    assert_structure(
        "<methodCall><methodName>m</methodName></methodCall><methodCall/>",
        "end of the document",
    );
    assert_structure("", "a root element");
    assert_structure("hello", "an element");
    assert_structure(
        "<methodCall><methodName>m</methodName><params><param><value><int><i4>1</i4></int></value></param></params></methodCall>",
        "text inside <int>",
    );
}

#[test]
fn structure_error_message_names_position() {
    let err = parse_call("<methodCall>\n  <oops/></methodCall>").unwrap_err();
    assert_eq!(
        err.to_string(),
        "at byte 15: expected <methodName>, found <oops>"
    );
    assert_eq!(err.fault_code(), crate::fault::FaultCode::Parse);
}

#[test]
fn bad_method_names_are_refused() {
    for name in ["", "  ", "a b", "a<b", "näme"] {
        let xml = format!(
            "<methodCall><methodName>{}</methodName></methodCall>",
            name.replace('<', "&lt;")
        );
        assert!(
            matches!(parse_call(&xml), Err(Error::BadScalar { .. })),
            "{name:?}"
        );
    }
}

#[test]
fn malformed_xml_is_an_xml_error() {
    for xml in [
        "<methodCall><methodName>m</methodName>",
        "<methodCall><methodName>m</methodCall>",
        "<methodCall><methodName>m</methodName></methodCall></x>",
        "<methodCall attr=><methodName>m</methodName></methodCall>",
        "<methodCall><methodName>a & b</methodName></methodCall>",
        "<methodCall",
    ] {
        match parse_call(xml) {
            Err(Error::Xml { .. }) | Err(Error::Structure { .. }) => {}
            other => panic!("{xml}: {other:?}"),
        }
    }
}

#[test]
fn doctype_is_refused() {
    let xml = "<?xml version=\"1.0\"?><!DOCTYPE methodCall><methodCall><methodName>m</methodName></methodCall>";
    assert!(matches!(parse_call(xml), Err(Error::Doctype { .. })));
    let resp = "<!DOCTYPE x []><methodResponse/>";
    assert!(matches!(parse_response(resp), Err(Error::Doctype { .. })));
}

#[test]
fn billion_laughs_is_refused_before_any_expansion() {
    let mut xml =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        xml.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    xml.push_str("]>\n<methodCall><methodName>m</methodName><params><param><value>&lol9;</value></param></params></methodCall>");
    let err = parse_call(&xml).unwrap_err();
    assert!(matches!(err, Error::Doctype { .. }), "{err:?}");
    assert!(err.to_string().contains("DOCTYPE"));
}

#[test]
fn external_entity_is_refused() {
    let xml = "<!DOCTYPE m [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><methodCall><methodName>m</methodName><params><param><value>&xxe;</value></param></params></methodCall>";
    assert!(matches!(parse_call(xml), Err(Error::Doctype { .. })));
}

#[test]
fn undeclared_entities_are_refused() {
    let xml = "<methodCall><methodName>m</methodName><params><param><value>&lol;</value></param></params></methodCall>";
    assert!(matches!(parse_call(xml), Err(Error::Entity { ref name, .. }) if name == "lol"));
    let xml = "<methodCall><methodName>m</methodName><params><param><value>&#0;</value></param></params></methodCall>";
    assert!(matches!(parse_call(xml), Err(Error::ForbiddenChar { .. })));
    for bad in ["&#;", "&#x;", "&#+1;", "&#X41;", "&#12a;", "&#xg;"] {
        let xml = format!(
            "<methodCall><methodName>m</methodName><params><param><value>{bad}</value></param></params></methodCall>"
        );
        assert!(
            matches!(parse_call(&xml), Err(Error::Entity { .. })),
            "{bad}: {:?}",
            parse_call(&xml)
        );
    }
}

/// A call with one `<string>` parameter holding `inner` verbatim.
fn string_call(inner: &str) -> String {
    format!(
        "<methodCall><methodName>m</methodName><params><param><value><string>{inner}</string></value></param></params></methodCall>"
    )
}

const STRING_AT: usize =
    "<methodCall><methodName>m</methodName><params><param><value><string>".len();

#[test]
fn forbidden_characters_are_refused_raw_or_as_references() {
    for (inner, what) in [
        ("a\u{0}b", "U+0000 (NUL)"),
        ("a\u{1}b", "U+0001 (a control character)"),
        ("a\u{1F}b", "U+001F (a control character)"),
        ("a\u{FFFE}b", "U+FFFE (a noncharacter)"),
        ("a\u{FFFF}b", "U+FFFF (a noncharacter)"),
        ("a&#0;b", "&#0; (U+0000 (NUL))"),
        ("a&#1;b", "&#1; (U+0001 (a control character))"),
        ("a&#x1b;b", "&#x1b; (U+001B (a control character))"),
        ("a&#xFFFE;b", "&#xFFFE; (U+FFFE (a noncharacter))"),
        ("a&#65535;b", "&#65535; (U+FFFF (a noncharacter))"),
        ("a&#xD800;b", "&#xD800; (U+D800, not a character)"),
        ("a&#x110000;b", "&#x110000; (U+110000, not a character)"),
        ("a&#x100000000;b", "&#x100000000; (beyond U+10FFFF)"),
    ] {
        let xml = string_call(inner);
        let err = parse_call(&xml).unwrap_err();
        let Error::ForbiddenChar {
            pos,
            what: got,
            place,
        } = &err
        else {
            panic!("{inner:?}: {err:?}")
        };
        assert_eq!(*pos, STRING_AT as u64 + 1, "{inner:?}: {err}");
        assert_eq!(got, what, "{inner:?}");
        assert_eq!(place, "<string>", "{inner:?}");
        assert_eq!(err.fault_code(), crate::fault::FaultCode::Parse);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("at byte {}: ", STRING_AT + 1)),
            "{text}"
        );
    }
    let err = parse_call(&string_call("x\u{0}")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "at byte {}: U+0000 (NUL) inside <string> is not allowed: XML 1.0 has no such character",
            STRING_AT + 1
        )
    );
}

#[test]
fn forbidden_characters_anywhere_in_the_document() {
    let cases = [
        // A member name, an untyped value, the method name, CDATA, a comment, the prolog.
        "<methodCall><methodName>m</methodName><params><param><value><struct><member><name>a\u{2}</name><value/></member></struct></value></param></params></methodCall>".to_string(),
        "<methodCall><methodName>m</methodName><params><param><value>&#2;</value></param></params></methodCall>".to_string(),
        "<methodCall><methodName>m\u{0}</methodName></methodCall>".to_string(),
        "<methodCall><methodName>m&#0;</methodName></methodCall>".to_string(),
        string_call("<![CDATA[a\u{7}]]>"),
        string_call("<!-- \u{0} -->"),
        "\u{0}<methodCall><methodName>m</methodName></methodCall>".to_string(),
        "<methodCall a=\"\u{1}\"><methodName>m</methodName></methodCall>".to_string(),
    ];
    for xml in &cases {
        match parse_call(xml) {
            Err(Error::ForbiddenChar { pos, .. }) => {
                let at = usize::try_from(pos).unwrap();
                let c = xml[at..].chars().next().unwrap();
                // Either the raw character itself or the '&' of its reference.
                assert!(c == '&' || !super::parse::is_xml_char(c), "{xml:?} at {at}");
            }
            other => panic!("{xml:?}: {other:?}"),
        }
    }
    // Same for responses, which cairnctl reads.
    let resp = "<methodResponse><params><param><value><string>\u{1}</string></value></param></params></methodResponse>";
    assert!(matches!(
        parse_response(resp),
        Err(Error::ForbiddenChar { .. })
    ));
}

#[test]
fn every_allowed_boundary_character_is_kept() {
    let xml = string_call(
        "\t&#x9;&#xA;&#xD;&#x20;&#xD7FF;&#xE000;&#xFFFD;&#x10000;&#x10FFFF;\u{7F}\u{85}\u{FFFD}\u{10FFFF}",
    );
    let c = parse_call(&xml).unwrap();
    assert_eq!(
        c.params,
        vec![Value::from(
            "\t\t\n\r \u{D7FF}\u{E000}\u{FFFD}\u{10000}\u{10FFFF}\u{7F}\u{85}\u{FFFD}\u{10FFFF}"
        )]
    );
}

fn one_value(inner: &str) -> Result<Value, Error> {
    let xml = format!(
        "<methodCall><methodName>m</methodName><params><param><value>{inner}</value></param></params></methodCall>"
    );
    parse_call(&xml).map(|mut c| c.params.remove(0))
}

#[test]
fn doubles_are_finite_decimals() {
    for (text, want) in [
        ("0", 0.0),
        ("-12.214", -12.214),
        ("+1.5", 1.5),
        (" 3 ", 3.0),
        ("1.", 1.0),
        (".5", 0.5),
        // Python's repr() of small and large floats.
        ("1e-07", 1e-7),
        ("1.5E+300", 1.5e300),
        ("-0.0", -0.0),
    ] {
        assert_eq!(
            one_value(&format!("<double>{text}</double>")).unwrap(),
            Value::Double(want),
            "{text}"
        );
    }
    for text in [
        "nan",
        "NaN",
        "-nan",
        "inf",
        "-inf",
        "+inf",
        "Infinity",
        "-infinity",
        "INF",
        "1e999",
        "-1e400",
        "",
        ".",
        "-",
        "1e",
        "1e+",
        "0x10",
        "1,5",
        "1.5.2",
        "1 2",
        "e5",
    ] {
        match one_value(&format!("<double>{text}</double>")) {
            Err(e @ Error::BadScalar { .. }) => {
                assert_eq!(e.fault_code(), crate::fault::FaultCode::Parse);
                assert!(e.to_string().contains("finite"), "{e}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn datetimes_are_checked() {
    for text in [
        "19980717T14:08:55",
        " 19980717T14:08:55 ",
        "1998-07-17T14:08:55",
        "20240229T23:59:60",
        "20250101T00:00:00Z",
        "2025-01-01T00:00:00+02:00",
        "20250101T00:00:00-09:30",
    ] {
        assert_eq!(
            one_value(&format!("<dateTime.iso8601>{text}</dateTime.iso8601>")).unwrap(),
            Value::DateTime(text.trim().into()),
            "{text}"
        );
    }
    for text in [
        "",
        "yesterday",
        "1998071714:08:55",
        "19980717 14:08:55",
        "19980717t14:08:55",
        "19980717T14:08",
        "19980717T14:08:55.123",
        "19981317T14:08:55",
        "19980017T14:08:55",
        "19980732T14:08:55",
        "20230229T00:00:00",
        "19000229T00:00:00",
        "19980717T24:00:00",
        "19980717T14:60:00",
        "19980717T14:08:61",
        "1998-0717T14:08:55",
        "199807-17T14:08:55",
        "19980717T14:08:55z",
        "19980717T14:08:55+0200",
        "19980717T14:08:55+24:00",
        "19980717T14:08:55+02:60",
        "19980717T14:08:55Z+01:00",
        "+1998-07-17T14:08:55",
        "１９９８0717T14:08:55",
    ] {
        match one_value(&format!("<dateTime.iso8601>{text}</dateTime.iso8601>")) {
            Err(e @ Error::BadScalar { .. }) => {
                assert!(e.to_string().contains("dateTime.iso8601"), "{e}")
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn written_documents_never_hold_forbidden_characters() {
    let nasty = "console: \u{0}\u{1}\u{8}\u{1B}[0m\u{FFFE}\u{FFFF} ok\t\n";
    let response = MethodResponse::Ok(Value::structure([
        ("log", Value::from(nasty)),
        (nasty, Value::Int(1)),
    ]));
    let xml = write_response(&response);
    assert!(xml.chars().all(super::parse::is_xml_char), "{xml:?}");
    let MethodResponse::Ok(Value::Struct(back)) = parse_response(&xml).unwrap() else {
        panic!()
    };
    let clean = "console: \u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}[0m\u{FFFD}\u{FFFD} ok\t\n";
    assert_eq!(back["log"], Value::from(clean));
    assert!(back.contains_key(clean));

    let fault = MethodResponse::Fault {
        code: 107,
        message: format!("failed: {nasty}"),
    };
    let xml = write_response(&fault);
    assert!(xml.chars().all(super::parse::is_xml_char));
    assert_eq!(
        parse_response(&xml).unwrap(),
        MethodResponse::Fault {
            code: 107,
            message: format!("failed: {clean}")
        }
    );
}

#[test]
fn non_finite_doubles_are_written_as_nil() {
    for d in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let xml = write_response(&MethodResponse::Ok(Value::Array(vec![
            Value::Double(d),
            Value::Double(2.5),
        ])));
        assert_eq!(
            parse_response(&xml).unwrap(),
            MethodResponse::Ok(Value::Array(vec![Value::Nil, Value::Double(2.5)])),
            "{xml}"
        );
    }
}

fn nested_arrays(levels: usize) -> String {
    let mut xml = String::from("<methodCall><methodName>m</methodName><params><param><value>");
    xml.push_str(&"<array><data><value>".repeat(levels));
    xml.push_str("<int>1</int>");
    xml.push_str(&"</value></data></array>".repeat(levels));
    xml.push_str("</value></param></params></methodCall>");
    xml
}

#[test]
fn nesting_up_to_the_limit_is_fine() {
    let c = parse_call(&nested_arrays(64)).unwrap();
    let mut v = &c.params[0];
    let mut depth = 0;
    while let Value::Array(items) = v {
        v = &items[0];
        depth += 1;
    }
    assert_eq!(depth, 64);
    assert!(matches!(
        parse_call(&nested_arrays(65)),
        Err(Error::TooDeep { limit: 64, .. })
    ));
}

#[test]
fn depth_bomb_is_cut_off_early() {
    // A million open tags, never closed: must fail on depth, not on memory or the stack.
    let mut xml = String::from("<methodCall><methodName>m</methodName><params><param><value>");
    xml.push_str(&"<struct><member><name>a</name><value>".repeat(200_000));
    let started = std::time::Instant::now();
    assert!(matches!(parse_call(&xml), Err(Error::TooDeep { .. })));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn element_count_is_capped() {
    let limits = Limits {
        max_depth: 64,
        max_elements: 100,
    };
    let mut xml =
        String::from("<methodCall><methodName>m</methodName><params><param><value><array><data>");
    xml.push_str(&"<value><int>1</int></value>".repeat(100));
    xml.push_str("</data></array></value></param></params></methodCall>");
    assert!(matches!(
        parse_call_with(&xml, &limits),
        Err(Error::TooManyElements { limit: 100 })
    ));
    assert!(parse_call(&xml).is_ok());
}

#[test]
fn fault_responses_are_checked() {
    let fault = |inner: &str| {
        parse_response(&format!(
            "<methodResponse><fault><value><struct>{inner}</struct></value></fault></methodResponse>"
        ))
    };
    let ok = fault(
        "<member><name>faultCode</name><value><i4>4</i4></value></member><member><name>faultString</name><value>Too many</value></member>",
    );
    assert_eq!(
        ok.unwrap(),
        MethodResponse::Fault {
            code: 4,
            message: "Too many".into()
        }
    );
    assert!(fault("<member><name>faultString</name><value>x</value></member>").is_err());
    assert!(fault("<member><name>faultCode</name><value>x</value></member><member><name>faultString</name><value>x</value></member>").is_err());
    assert!(
        parse_response(
            "<methodResponse><fault><value><int>1</int></value></fault></methodResponse>"
        )
        .is_err()
    );
}

#[test]
fn response_needs_exactly_one_param() {
    assert!(parse_response("<methodResponse><params/></methodResponse>").is_err());
    assert!(
        parse_response("<methodResponse><params><param><value/></param><param><value/></param></params></methodResponse>")
            .is_err()
    );
    assert!(parse_response("<methodResponse/>").is_err());
    assert!(
        parse_response(
            "<methodResponse><params><param><value/></param></params><fault/></methodResponse>"
        )
        .is_err()
    );
}

#[test]
fn written_call_is_exact() {
    let c = call(
        "a.b",
        vec![Value::Int(1), Value::structure([("k", Value::Bool(true))])],
    );
    assert_eq!(
        write_call(&c),
        "<?xml version=\"1.0\"?>\n<methodCall><methodName>a.b</methodName><params><param><value><int>1</int></value></param><param><value><struct><member><name>k</name><value><boolean>1</boolean></value></member></struct></value></param></params></methodCall>\n"
    );
}

#[test]
fn value_helpers() {
    assert_eq!(Value::from_u64(5), Value::Int(5));
    assert_eq!(Value::from_u64(u64::MAX), Value::I8(i64::MAX));
    assert_eq!(Value::from_u64(1 << 31), Value::I8(1 << 31));
    assert_eq!(Value::I8(3).as_i64(), Some(3));
    assert_eq!(Value::Int(3).type_name(), "int");
    assert_eq!(Value::from("x").as_str(), Some("x"));
    assert!(Value::Nil.as_struct().is_none());
}
