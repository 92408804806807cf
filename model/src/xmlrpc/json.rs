//! XML-RPC values as JSON, for `cairnctl --json`: dates and base64 become strings, `<nil/>` null.

use serde_json::{Map, Number, Value as Json};

use super::Value;

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_of_a_value() {
        let v = Value::structure([
            ("name", Value::from("lan")),
            ("rate", Value::I8(500_000_000_000)),
            ("tags", Value::Array(vec![Value::Int(1), Value::Nil])),
            ("on", Value::Bool(true)),
            ("blob", Value::Base64(b"hi".to_vec())),
        ]);
        assert_eq!(
            v.to_json(),
            serde_json::json!({"name": "lan", "rate": 500_000_000_000u64, "tags": [1, null],
                               "on": true, "blob": "aGk="})
        );
    }
}
