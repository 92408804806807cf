//! XML-RPC values ↔ JSON: the API's structured arguments (network and port specs, limits) travel
//! to the daemons as JSON over D-Bus, and their JSON answers come back to the client as structs.

use serde_json::{Map, Number, Value as Json};

use super::{Struct, Value};

impl Value {
    /// The JSON form of a value a client sent. Dates and base64 become strings; `<nil/>` null.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Int(i) => Json::from(*i),
            Value::I8(i) => Json::from(*i),
            Value::Bool(b) => Json::Bool(*b),
            Value::String(s) | Value::DateTime(s) => Json::String(s.clone()),
            Value::Double(d) => Number::from_f64(*d).map_or(Json::Null, Json::Number),
            Value::Base64(bytes) => {
                use base64::Engine as _;
                Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            Value::Struct(members) => Json::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect::<Map<_, _>>(),
            ),
            Value::Array(items) => Json::Array(items.iter().map(Value::to_json).collect()),
            Value::Nil => Json::Null,
        }
    }

    /// The XML-RPC form of a daemon's JSON answer. Null members are left out of structs (plain
    /// XML-RPC has no null), integers are `<int>` when they fit and `<i8>` otherwise.
    pub fn from_json(json: &Json) -> Value {
        match json {
            Json::Null => Value::Nil,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => i32::try_from(i).map_or(Value::I8(i), Value::Int),
                (None, Some(u)) => Value::from_u64(u),
                _ => Value::Double(n.as_f64().unwrap_or(0.0)),
            },
            Json::String(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Value::from_json).collect()),
            Json::Object(members) => Value::Struct(
                members
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect::<Struct>(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_null_members_dropped() {
        let json: Json = serde_json::from_str(
            r#"{"name":"lan","vlan":10,"rate":500000000000,"uplink":null,"tags":[1,2],"on":true}"#,
        )
        .unwrap();
        let v = Value::from_json(&json);
        let s = v.as_struct().unwrap();
        assert!(!s.contains_key("uplink"));
        assert_eq!(s["vlan"], Value::Int(10));
        assert_eq!(s["rate"], Value::I8(500_000_000_000));
        let back = v.to_json();
        assert_eq!(back["tags"], serde_json::json!([1, 2]));
        assert_eq!(back["rate"], serde_json::json!(500_000_000_000u64));
        assert_eq!(back["on"], Json::Bool(true));
    }
}
