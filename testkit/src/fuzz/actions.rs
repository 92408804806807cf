//! Every declared API action by its type (`model::api::visit_actions`): valid calls to seed
//! the fuzzers with, and the decoding properties every action's parameters must have.

use model::api::{Action, ActionVisitor, Declaration};
use model::xmlrpc::{MethodCall, Value};

use super::{Rng, fabricate};

/// One action: its declaration, and its typed code behind plain function pointers.
#[derive(Clone, Copy)]
pub struct Entry {
    pub decl: &'static Declaration,
    /// Valid parameter lists: every optional part present (`true`) or absent.
    seed: fn(&mut Rng, bool) -> Result<Vec<Value>, String>,
    /// A valid result, as the action answers it.
    result: fn(&mut Rng) -> Result<Value, String>,
    /// `A::from_params`, the decoding apid runs, with the result dropped.
    decode: fn(Vec<Value>) -> Result<(), String>,
    /// The decoding properties (see [`Entry::check`]).
    check: fn(&[Value]) -> Result<String, String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.decl.name)
    }
}

impl Entry {
    /// Valid parameters, full or minimal.
    pub fn seed(&self, rng: &mut Rng, full: bool) -> Result<Vec<Value>, String> {
        (self.seed)(rng, full)
    }

    /// A valid answer of this action.
    pub fn result(&self, rng: &mut Rng) -> Result<Value, String> {
        (self.result)(rng)
    }

    /// What apid's decoding says of `params`: `Err` is the bad_params fault's message.
    pub fn decode(&self, params: Vec<Value>) -> Result<(), String> {
        (self.decode)(params)
    }

    /// Decodes `params` and checks what came out: accepted parameters encode again and decode
    /// to the same; a refusal names the action and either gives the wrong count or names the
    /// member at fault by a path that leads to it in `params`, with its real type. Returns a
    /// label for the outcome, or the property that does not hold.
    pub fn check(&self, params: &[Value]) -> Result<String, String> {
        (self.check)(params)
    }
}

/// Every declared action, in declaration order of the modules.
pub fn all() -> Vec<Entry> {
    struct Collect(Vec<Entry>);
    impl ActionVisitor for Collect {
        fn visit<A: Action>(&mut self) {
            self.0.push(Entry {
                decl: &A::DECL,
                seed: seed::<A>,
                result: result::<A>,
                decode: |p| A::from_params(p).map(drop),
                check: check::<A>,
            });
        }
    }
    let mut c = Collect(Vec::new());
    model::api::visit_actions(&mut c);
    c.0
}

fn seed<A: Action>(rng: &mut Rng, full: bool) -> Result<Vec<Value>, String> {
    let a: A = fabricate(rng, full).map_err(|e| format!("{}: {e}", A::DECL.name))?;
    a.to_params().map_err(|e| format!("{}: {e}", A::DECL.name))
}

fn result<A: Action>(rng: &mut Rng) -> Result<Value, String> {
    let r: A::Result = fabricate(rng, true).map_err(|e| format!("{}: {e}", A::DECL.name))?;
    model::xmlrpc::to_value(&r).map_err(|e| format!("{}: {e}", A::DECL.name))
}

/// Valid calls of every action (full and minimal parameters, `variants` of each), plus a
/// `system.multicall` batching some of them.
pub fn valid_calls(rng: &mut Rng, variants: usize) -> Result<Vec<MethodCall>, String> {
    let mut calls = Vec::new();
    for entry in all() {
        for i in 0..variants.max(1) {
            for full in [true, false] {
                if i > 0 && !full {
                    continue;
                }
                calls.push(MethodCall {
                    name: entry.decl.name.to_string(),
                    params: entry.seed(rng, full)?,
                });
            }
        }
    }
    let batch: Vec<Value> = calls
        .iter()
        .filter(|c| c.name != "system.multicall")
        .step_by(7)
        .map(|c| {
            Value::structure([
                ("methodName", Value::from(c.name.as_str())),
                ("params", Value::Array(c.params.clone())),
            ])
        })
        .collect();
    calls.push(MethodCall {
        name: "system.multicall".into(),
        params: vec![Value::Array(batch)],
    });
    Ok(calls)
}

fn check<A: Action>(params: &[Value]) -> Result<String, String> {
    let name = A::DECL.name;
    match A::from_params(params.to_vec()) {
        Ok(a) => {
            round_trip(&a)?;
            Ok(format!("{name}: accepted"))
        }
        Err(message) => {
            let kind = refusal_names_its_member(&A::DECL, params, &message)
                .map_err(|why| format!("{why}: {message:?} for {params:?}"))?;
            Ok(format!("{name}: {kind}"))
        }
    }
}

/// Accepted parameters encode, and what they encode to decodes to the same encoding: a
/// client (cairnctl) that sends what it decoded is understood the same way.
fn round_trip<A: Action>(a: &A) -> Result<(), String> {
    let name = A::DECL.name;
    let again = a
        .to_params()
        .map_err(|e| format!("{name}: accepted parameters do not encode again: {e}"))?;
    let b = A::from_params(again.clone())
        .map_err(|e| format!("{name}: re-encoded parameters are refused: {e}; {again:?}"))?;
    let third = b
        .to_params()
        .map_err(|e| format!("{name}: re-decoded parameters do not encode: {e}"))?;
    if third != again {
        return Err(format!(
            "{name}: decoding is not stable: {again:?} came back as {third:?}"
        ));
    }
    Ok(())
}

/// One step of a member path as `model::xmlrpc::de` writes it (`spec.disks[0].read_only`).
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Member(&'a str),
    Index(usize),
}

fn parse_path(path: &str) -> Option<Vec<Step<'_>>> {
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            steps.push(Step::Index(r[..end].parse().ok()?));
            rest = &r[end + 1..];
        } else {
            let r = rest.strip_prefix('.').unwrap_or(rest);
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Member(&r[..end]));
            rest = &r[end..];
        }
    }
    Some(steps)
}

fn follow<'v>(root: &'v Value, steps: &[Step<'_>]) -> Option<&'v Value> {
    steps.iter().try_fold(root, |v, step| match (step, v) {
        (Step::Member(m), Value::Struct(s)) => s.get(*m),
        (Step::Index(i), Value::Array(a)) => a.get(*i),
        _ => None,
    })
}

/// Checks that a refusal of `params` says what is wrong where; returns what kind of refusal
/// it is.
fn refusal_names_its_member(
    decl: &Declaration,
    params: &[Value],
    message: &str,
) -> Result<&'static str, String> {
    if message.starts_with(&format!("{} takes ", decl.name)) {
        return match decl.check_count(params.len()) {
            Err(_) => Ok("wrong count"),
            Ok(()) => Err("a count error for a count the action takes".into()),
        };
    }
    if decl.check_count(params.len()).is_err() {
        return Err("a wrong count reported as something else".into());
    }
    let rest = message
        .strip_prefix(decl.name)
        .and_then(|r| r.strip_prefix(": "))
        .ok_or("the refusal does not start with the action's name")?;
    // The parameters as the decoder sees them: members named after the declaration.
    let root = Value::Struct(
        decl.params
            .iter()
            .map(|p| p.name.to_string())
            .zip(params.iter().cloned())
            .collect(),
    );
    if let Some(member) = between(rest, "missing member `", "`")
        && !rest.contains(": ")
    {
        return if decl.params.iter().any(|p| p.name == member) {
            Ok("missing parameter")
        } else {
            Err(format!(
                "a missing parameter {member:?} that is not declared"
            ))
        };
    }
    let (path, problem) = match rest.split_once(" must be ") {
        Some((path, _)) if !path.contains(": ") => (path, rest),
        _ => rest.split_once(": ").ok_or("the refusal names no member")?,
    };
    let steps = parse_path(path).ok_or_else(|| format!("{path:?} is not a member path"))?;
    match steps.first() {
        Some(Step::Member(first)) if decl.params.iter().any(|p| p.name == *first) => {}
        _ => return Err(format!("{path:?} does not start with a parameter's name")),
    }
    let at = follow(&root, &steps).ok_or_else(|| format!("{path:?} leads nowhere in the call"))?;
    if let Some((_, got)) = problem.split_once(", got ")
        && problem.contains(" must be ")
    {
        return if got == at.type_name() {
            Ok("wrong type")
        } else {
            Err(format!(
                "says {path} is {got}, but it is {}",
                at.type_name()
            ))
        };
    }
    if let Some(member) = between(problem, "missing member `", "`") {
        return match at {
            Value::Struct(s) if !s.contains_key(member) => Ok("missing member"),
            _ => Err(format!("says {path} lacks {member:?}, but it has it")),
        };
    }
    if problem.starts_with("unknown member ") {
        // The name is quoted as the decoder quotes it: in backticks, or escaped when that
        // would be ambiguous. One of the struct's members must be the one named.
        let named = |k: &String| {
            problem.starts_with(&format!("unknown member `{k}`;"))
                || problem.starts_with(&format!("unknown member {k:?};"))
        };
        return match at {
            Value::Struct(s) if s.keys().any(named) => Ok("unknown member"),
            _ => Err(format!("names a member {path} does not have")),
        };
    }
    if problem.contains(" is out of range ") || problem.ends_with(" must not be negative") {
        let n = problem
            .split(' ')
            .next()
            .and_then(|n| n.parse::<i64>().ok());
        return if n.is_some() && n == at.as_i64() {
            Ok("out of range")
        } else {
            Err(format!("says {path} is {n:?}, but it is {at:?}"))
        };
    }
    if problem.starts_with("unknown value ") {
        return match at {
            Value::String(_) => Ok("unknown variant"),
            Value::Struct(s) if s.len() == 1 => Ok("unknown variant"),
            _ => Err(format!("an unknown variant at {path}, which is {at:?}")),
        };
    }
    Ok("other refusal")
}

/// The text between `start` and the next `end` in `s`.
fn between<'s>(s: &'s str, start: &str, end: &str) -> Option<&'s str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> Entry {
        all()
            .into_iter()
            .find(|e| e.decl.name == name)
            .unwrap_or_else(|| panic!("no action {name}"))
    }

    #[test]
    fn every_action_has_valid_seeds_that_pass_their_own_checks() {
        let mut rng = Rng::new(1);
        let calls = valid_calls(&mut rng, 2).unwrap_or_else(|e| panic!("{e}"));
        assert!(calls.len() > 2 * model::api::declarations().len());
        for call in &calls {
            let e = entry(&call.name);
            assert_eq!(e.decode(call.params.clone()), Ok(()), "{call:?}");
            let label = e.check(&call.params).unwrap_or_else(|why| panic!("{why}"));
            assert!(label.ends_with("accepted"), "{label}");
        }
    }

    #[test]
    fn refusals_are_checked_against_the_call() {
        let stop = entry("vm.stop");
        let wrong = [Value::from("web"), Value::from("3")];
        assert_eq!(stop.check(&wrong), Ok("vm.stop: wrong type".into()));
        let negative = [Value::from("web"), Value::Int(-1)];
        assert_eq!(stop.check(&negative), Ok("vm.stop: out of range".into()));
        assert_eq!(stop.check(&[]), Ok("vm.stop: wrong count".into()));
        let create = entry("net.create");
        let unknown = [Value::structure([
            ("name", Value::from("lan")),
            ("kind", Value::from("bridged")),
            ("colour", Value::from("red")),
        ])];
        assert_eq!(
            create.check(&unknown),
            Ok("net.create: unknown member".into())
        );
        // A message that pointed elsewhere would be caught.
        assert!(
            refusal_names_its_member(stop.decl, &wrong, "vm.stop: name must be int, got int")
                .is_err()
        );
        assert!(
            refusal_names_its_member(stop.decl, &wrong, "vm.stop: spec.x must be int, got string")
                .is_err()
        );
    }

    #[test]
    fn paths_parse_as_the_decoder_writes_them() {
        assert_eq!(
            parse_path("spec.disks[0].read_only"),
            Some(vec![
                Step::Member("spec"),
                Step::Member("disks"),
                Step::Index(0),
                Step::Member("read_only")
            ])
        );
        assert_eq!(parse_path("a..b"), None);
        assert_eq!(parse_path("a[x]"), None);
    }
}
