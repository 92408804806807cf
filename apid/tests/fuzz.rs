//! Mutated requests against the real `apid` binary on a private bus, over TLS with the token:
//! valid calls of every declared action, broken as bytes, as parameter shapes, and batched.
//! Every answer must be a well-formed XML-RPC response or fault, and the fault the one model's
//! own parser and decoders predict; after every batch apid must still answer
//! `system.listMethods` and still own its bus name. 600 requests here (a few seconds);
//! ci/bench.d/fuzz.sh sends more (`CAIRN_FUZZ_E2E_ITERS`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Apid, basic, http_from, list_methods, lo};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use model::api::system::BatchCall;
use model::fault::FaultCode;
use model::xmlrpc::{MethodCall, MethodResponse, Value, from_value, parse_call, parse_response};
use testkit::fuzz::actions::{self, Entry};
use testkit::fuzz::value::ValueMutator;
use testkit::fuzz::{Budget, Mutator, Rng, show_bytes};

/// Requests between two checks that apid is still there.
const BATCH: u64 = 50;

/// POSTs `body` with the token; the HTTP status and the answer's body.
async fn post(send: &mut SendRequest<Full<Bytes>>, body: Vec<u8>) -> Result<(u16, String), String> {
    let req = hyper::Request::builder()
        .method("POST")
        .uri("/RPC2")
        .header("host", "localhost")
        .header("content-type", "text/xml")
        .header("authorization", basic())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    send.ready().await.map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The fault a call must get when model's own decoding refuses it, or `None` when it decodes.
fn predicted(
    entries: &BTreeMap<&str, Entry>,
    name: &str,
    params: &[Value],
) -> Option<(FaultCode, Option<String>)> {
    match entries.get(name) {
        None => Some((FaultCode::UnknownMethod, None)),
        Some(e) => e
            .decode(params.to_vec())
            .err()
            .map(|m| (FaultCode::BadParams, Some(m))),
    }
}

/// Text as the writer puts it on the wire: characters XML cannot carry (a NUL quoted from the
/// request in a parse error) become U+FFFD.
fn as_written(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => c,
            _ => '\u{FFFD}',
        })
        .collect()
}

/// Checks one fault against a prediction: the code, and the message where model has one.
fn fault_as_predicted(
    code: i32,
    message: &str,
    want: Option<(FaultCode, Option<String>)>,
) -> Result<(), String> {
    let known = FaultCode::from_code(code)
        .ok_or_else(|| format!("fault code {code} is not one of the API's"))?;
    if message.contains("failed unexpectedly") {
        return Err(format!("a method handler panicked: {message}"));
    }
    match want {
        Some((want, text)) => {
            if known != want {
                return Err(format!(
                    "fault {code} ({message}), expected {}",
                    want.code()
                ));
            }
            if let Some(text) = text.as_deref().map(as_written)
                && text != message
            {
                return Err(format!("fault message {message:?}, model says {text:?}"));
            }
        }
        // A call that decodes gets past the parser and the method table; 101 is left for a
        // method it names (system.methodHelp's parameter) that is not declared.
        None if known == FaultCode::Parse => {
            return Err(format!("a call that decodes got fault {code}: {message}"));
        }
        None if known == FaultCode::UnknownMethod => {
            let named = message.strip_prefix("no method ").unwrap_or_default();
            if named.is_empty()
                || model::api::declarations()
                    .iter()
                    .any(|d| named.starts_with(&format!("{:?}", d.name)))
            {
                return Err(format!("a call that decodes got fault {code}: {message}"));
            }
        }
        None => {}
    }
    Ok(())
}

/// An answer's properties: HTTP 200 with a well-formed response or fault, the fault the one
/// model predicts for the body; for a batch, one well-formed entry per call, each as predicted.
fn check_answer(
    entries: &BTreeMap<&str, Entry>,
    body: &[u8],
    status: u16,
    answer: &str,
) -> Result<String, String> {
    if status != 200 {
        return Err(format!("HTTP {status}: {answer}"));
    }
    let response =
        parse_response(answer).map_err(|e| format!("a malformed answer ({e}): {answer}"))?;
    let call = match std::str::from_utf8(body) {
        Err(_) => Err((
            FaultCode::Parse,
            Some("the request body is not UTF-8".to_string()),
        )),
        Ok(text) => parse_call(text).map_err(|e| (FaultCode::Parse, Some(e.to_string()))),
    };
    let (call, want) = match call {
        Err(want) => (None, Some(want)),
        Ok(call) => {
            let want = predicted(entries, &call.name, &call.params);
            (Some(call), want)
        }
    };
    match response {
        MethodResponse::Fault { code, message } => {
            fault_as_predicted(code, &message, want)?;
            Ok(format!("fault {code}"))
        }
        MethodResponse::Ok(value) => {
            if want.is_some() {
                return Err(format!(
                    "answered {value:?}, but model refuses the call: {want:?}"
                ));
            }
            if let Some(c) = call.filter(|c| c.name == "system.multicall") {
                check_batch(entries, &c, &value)?;
                return Ok("batch answered".into());
            }
            Ok("answered".into())
        }
    }
}

/// Each entry of a batch's answer: a one-element array, or a fault as predicted for its call.
fn check_batch(
    entries: &BTreeMap<&str, Entry>,
    call: &MethodCall,
    answer: &Value,
) -> Result<(), String> {
    let calls = call.params.first().and_then(Value::as_array).unwrap_or(&[]);
    let results = answer
        .as_array()
        .ok_or("a batch answered with something else than an array")?;
    if calls.len() != results.len() {
        return Err(format!("{} calls, {} results", calls.len(), results.len()));
    }
    for (i, (c, r)) in calls.iter().zip(results).enumerate() {
        let want = match from_value::<BatchCall>(c.clone()) {
            Err(e) => Some((FaultCode::BadParams, Some(format!("call {i}: {e}")))),
            Ok(b) if b.method_name == "system.multicall" => Some((FaultCode::BadParams, None)),
            Ok(b) => predicted(entries, &b.method_name, &b.params),
        };
        match r {
            Value::Array(one) if one.len() == 1 && want.is_none() => {}
            Value::Struct(s) => match (s.get("faultCode"), s.get("faultString"), s.len()) {
                (Some(Value::Int(code)), Some(Value::String(m)), 2) => {
                    fault_as_predicted(*code, m, want).map_err(|e| format!("call {i}: {e}"))?
                }
                _ => return Err(format!("call {i}: a malformed fault {s:?}")),
            },
            other => return Err(format!("call {i}: {other:?}, expected by model: {want:?}")),
        }
    }
    Ok(())
}

/// Whether apid still owns its bus name, asked of the bus itself.
async fn owns_its_name(bus: &zbus::Connection) -> Result<bool, String> {
    let dbus = zbus::fdo::DBusProxy::new(bus)
        .await
        .map_err(|e| e.to_string())?;
    let name = zbus::names::BusName::try_from(model::dbus::API_NAME).map_err(|e| e.to_string())?;
    dbus.name_has_owner(name).await.map_err(|e| e.to_string())
}

#[test]
fn fuzz_requests_keep_apid_on_the_bus() {
    let mut apid = Apid::start("fuzz");
    let budget = Budget::from_env_var("CAIRN_FUZZ_E2E_ITERS", 600);
    let entries: BTreeMap<&str, Entry> = actions::all()
        .into_iter()
        .map(|e| (e.decl.name, e))
        .collect();
    let mut rng = Rng::new(budget.seed);
    let calls = actions::valid_calls(&mut rng, 1).unwrap_or_else(|e| panic!("{e}"));
    let documents: Vec<Vec<u8>> = calls
        .iter()
        .map(|c| model::xmlrpc::write_call(c).into_bytes())
        .collect();
    let bytes = Mutator::new(
        &documents,
        &[
            b"<value>",
            b"</value>",
            b"<struct>",
            b"<member>",
            b"<array><data>",
            b"&#0;",
            b"<i8>",
        ],
    )
    .with_corpus_words();
    let all_params: Vec<Value> = calls.iter().flat_map(|c| c.params.clone()).collect();
    let values = ValueMutator::new(&all_params);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let tls = apid.tls_config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    rt.block_on(async {
        let bus = zbus::connection::Builder::address(apid.bus_address.as_str())
            .method_timeout(Duration::from_secs(5))
            .build()
            .await
            .unwrap_or_else(|e| panic!("cannot join apid's bus: {e}"));
        let mut send = None;
        for i in 0..budget.iters {
            let body = match rng.below(11) {
                // Now and then a call as it is: the methods behind the decoders answer too.
                10 => {
                    let Some(c) = rng.pick(&calls) else { break };
                    model::xmlrpc::write_call(c).into_bytes()
                }
                0..4 => {
                    let Some(doc) = rng.pick(&documents) else {
                        break;
                    };
                    bytes.mutate(&mut rng, doc)
                }
                4..8 => {
                    let Some(c) = rng.pick(&calls) else { break };
                    let params = values.mutate_params(&mut rng, &c.params);
                    let call = MethodCall {
                        name: c.name.clone(),
                        params,
                    };
                    model::xmlrpc::write_call(&call).into_bytes()
                }
                _ => {
                    let mut batch = Vec::new();
                    for _ in 0..1 + rng.below(6) {
                        let Some(c) = rng.pick(&calls) else { break };
                        let mut entry = Value::structure([
                            ("methodName", Value::from(c.name.as_str())),
                            ("params", Value::Array(c.params.clone())),
                        ]);
                        values.mutate(&mut rng, &mut entry);
                        batch.push(entry);
                    }
                    let call = MethodCall {
                        name: "system.multicall".into(),
                        params: vec![Value::Array(batch)],
                    };
                    model::xmlrpc::write_call(&call).into_bytes()
                }
            };
            // One keep-alive connection, made again when apid closed it (a refused body ends
            // its connection): a second failure in a row is apid's.
            let mut answer = Err(String::new());
            for _ in 0..2 {
                if send.is_none() {
                    send = http_from(lo(40), apid.addr, tls.clone()).await.ok();
                }
                let Some(s) = send.as_mut() else { continue };
                answer = post(s, body.clone()).await;
                if answer.is_ok() {
                    break;
                }
                send = None;
            }
            let (status, text) = answer.unwrap_or_else(|e| {
                panic!(
                    "request {i} got no answer ({e}); body {}\napid's log:\n{}",
                    show_bytes(&body),
                    apid.log_text()
                )
            });
            let label = check_answer(&entries, &body, status, &text)
                .unwrap_or_else(|why| panic!("request {i}: {why}\nbody: {}", show_bytes(&body)));
            *outcomes.entry(label).or_default() += 1;
            if (i + 1) % BATCH == 0 || i + 1 == budget.iters {
                let mut fresh = http_from(lo(41), apid.addr, tls.clone())
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "after request {i}, no new connection: {e}\n{}",
                            apid.log_text()
                        )
                    });
                list_methods(&mut fresh).await.unwrap_or_else(|e| {
                    panic!(
                        "after request {i}, system.listMethods fails: {e}\n{}",
                        apid.log_text()
                    )
                });
                assert_eq!(
                    owns_its_name(&bus).await,
                    Ok(true),
                    "after request {i}, apid is off the bus:\n{}",
                    apid.log_text()
                );
            }
        }
    });
    let elapsed = started.elapsed();
    assert!(apid.alive(), "apid died:\n{}", apid.log_text());
    assert!(
        !apid.logged("panicked"),
        "apid logged a panic:\n{}",
        apid.log_text()
    );
    eprintln!(
        "fuzz apid requests: {} inputs in {:.2} s ({:.0}/s), {} distinct outcomes: {outcomes:?}",
        budget.iters,
        elapsed.as_secs_f64(),
        budget.iters as f64 / elapsed.as_secs_f64().max(1e-9),
        outcomes.len()
    );
    // The mutants reached the parser's refusals, the decoders' and the methods behind them.
    for code in [100, 101, 102] {
        assert!(
            outcomes.contains_key(&format!("fault {code}")),
            "no fault {code} in {outcomes:?}"
        );
    }
    assert!(outcomes.contains_key("answered"), "{outcomes:?}");
}
