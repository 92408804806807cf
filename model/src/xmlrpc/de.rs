//! XML-RPC values straight into serde types: the API's typed parameters are decoded here, with
//! no JSON in between.
//!
//! Strict by design, since this is the API's shape check: a member of the wrong XML-RPC type, an
//! unknown member (with `deny_unknown_fields`), a missing one, an integer out of its field's
//! range or a double that is not finite is an error that names the member by its path
//! (`disks[0].read_only must be boolean, got string`). An `<int>` is accepted where a double is
//! wanted (no precision is lost); nothing else is converted.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

use super::{Struct, Value};

/// One step of the path to a member: `.name` or `[index]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Member(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// The member has another XML-RPC type than the field wants.
    Type {
        want: &'static str,
        got: &'static str,
    },
    Other(String),
}

/// Why a value does not fit the type it was decoded into, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    path: Vec<Step>,
    problem: Problem,
}

impl DecodeError {
    /// The path to the member at fault (`disks[0].read_only`), empty for the value itself.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for step in &self.path {
            match step {
                Step::Member(m) if out.is_empty() => out.push_str(m),
                Step::Member(m) => {
                    out.push('.');
                    out.push_str(m);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    /// The same error, one level further out: inside member `name`.
    pub fn in_member(mut self, name: &str) -> DecodeError {
        self.path.insert(0, Step::Member(name.to_string()));
        self
    }

    fn at_index(mut self, i: usize) -> DecodeError {
        self.path.insert(0, Step::Index(i));
        self
    }

    fn wrong_type(want: &'static str, got: &Value) -> DecodeError {
        DecodeError {
            path: Vec::new(),
            problem: Problem::Type {
                want,
                got: got.type_name(),
            },
        }
    }

    fn other(message: impl Into<String>) -> DecodeError {
        DecodeError {
            path: Vec::new(),
            problem: Problem::Other(message.into()),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path();
        match (&self.problem, path.is_empty()) {
            (Problem::Type { want, got }, true) => write!(f, "expected {want}, got {got}"),
            (Problem::Type { want, got }, false) => write!(f, "{path} must be {want}, got {got}"),
            (Problem::Other(m), true) => f.write_str(m),
            (Problem::Other(m), false) => write!(f, "{path}: {m}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A member name the client sent, as messages show it: `` `name` `` like the names we declare,
/// unless it would not read back unambiguously that way (empty, a backtick or a control
/// character in it): then quoted and escaped, `"a`b"`.
fn quoted_member(name: &str) -> String {
    if name.is_empty() || name.chars().any(|c| c == '`' || c.is_control()) {
        format!("{name:?}")
    } else {
        format!("`{name}`")
    }
}

fn one_of(names: &'static [&'static str]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError::other(msg.to_string())
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DecodeError::other(format!(
            "unknown member {}; known members: {}",
            quoted_member(field),
            one_of(expected)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        DecodeError::other(format!("missing member `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        DecodeError::other(format!("member `{field}` given twice"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DecodeError::other(format!(
            "unknown value {variant:?}; expected one of: {}",
            one_of(expected)
        ))
    }
}

/// Decodes a value into `T`.
pub fn from_value<T: de::DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    T::deserialize(ValueDeserializer(value))
}

/// A method's positional parameters into its parameter struct `T`, whose fields are the
/// parameters in order (`names`, as the declaration lists them). The count is the caller's to
/// check; a parameter left out is a missing member, so an `Option` field reads as `None`.
/// Errors name the parameter (`timeout_s must be int, got string`).
pub fn from_params<'a, T: de::DeserializeOwned>(
    params: Vec<Value>,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<T, DecodeError> {
    let members: Struct = names
        .into_iter()
        .zip(params)
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    T::deserialize(ValueDeserializer(Value::Struct(members)))
}

/// A deserializer over one owned value.
pub struct ValueDeserializer(pub Value);

impl ValueDeserializer {
    fn int(self, want: &'static str) -> Result<i64, DecodeError> {
        self.0
            .as_i64()
            .ok_or_else(|| DecodeError::wrong_type(want, &self.0))
    }
}

/// An integer field of type `$t`: the XML-RPC value must be `<int>`/`<i8>` and in range.
macro_rules! int_hint {
    ($method:ident, $visit:ident, $t:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
            let n = self.int("int")?;
            let v = <$t>::try_from(n).map_err(|_| {
                DecodeError::other(if n < 0 && <$t>::MIN == 0 {
                    format!("{n} must not be negative")
                } else {
                    format!("{n} is out of range {}..={}", <$t>::MIN, <$t>::MAX)
                })
            })?;
            visitor.$visit(v)
        }
    };
}

impl<'de> de::Deserializer<'de> for ValueDeserializer {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Int(i) => visitor.visit_i32(i),
            Value::I8(i) => visitor.visit_i64(i),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::String(s) | Value::DateTime(s) => visitor.visit_string(s),
            Value::Double(d) => visitor.visit_f64(finite(d)?),
            Value::Base64(b) => visitor.visit_byte_buf(b),
            Value::Struct(s) => visitor.visit_map(Members::new(s)),
            Value::Array(a) => visitor.visit_seq(Items::new(a)),
            Value::Nil => visitor.visit_unit(),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(b),
            other => Err(DecodeError::wrong_type("boolean", &other)),
        }
    }

    int_hint!(deserialize_i8, visit_i8, i8);
    int_hint!(deserialize_i16, visit_i16, i16);
    int_hint!(deserialize_i32, visit_i32, i32);
    int_hint!(deserialize_i64, visit_i64, i64);
    int_hint!(deserialize_u8, visit_u8, u8);
    int_hint!(deserialize_u16, visit_u16, u16);
    int_hint!(deserialize_u32, visit_u32, u32);
    int_hint!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Double(d) => visitor.visit_f64(finite(d)?),
            // Lossless for every int XML-RPC carries but the largest i8s, which no field of
            // ours wants as a double.
            Value::Int(i) => visitor.visit_f64(f64::from(i)),
            other => Err(DecodeError::wrong_type("double", &other)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            other => Err(DecodeError::wrong_type("string", &other)),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Base64(b) => visitor.visit_byte_buf(b),
            other => Err(DecodeError::wrong_type("base64", &other)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Nil => visitor.visit_none(),
            other => visitor.visit_some(ValueDeserializer(other)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Nil => visitor.visit_unit(),
            other => Err(DecodeError::wrong_type("nil", &other)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        if name == EXACT {
            match self.0 {
                Value::I8(i) => return visitor.visit_enum(Exact::I8(i)),
                Value::DateTime(s) => return visitor.visit_enum(Exact::DateTime(s)),
                _ => {}
            }
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Array(a) => visitor.visit_seq(Items::new(a)),
            other => Err(DecodeError::wrong_type("array", &other)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::Struct(s) => visitor.visit_map(Members::new(s)),
            other => Err(DecodeError::wrong_type("struct", &other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_map(visitor)
    }

    /// Unit variants are strings (`"bridged"`); a variant with data is a one-member struct.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            Value::Struct(s) if s.len() == 1 => {
                let Some((variant, value)) = s.into_iter().next() else {
                    return Err(DecodeError::other("empty variant struct"));
                };
                visitor.visit_enum(Variant { variant, value })
            }
            other => Err(DecodeError::wrong_type("string", &other)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }
}

/// XML-RPC's doubles are finite decimals; the parser refuses nan and inf, and so does this, for
/// values built in code.
fn finite(d: f64) -> Result<f64, DecodeError> {
    if d.is_finite() {
        Ok(d)
    } else {
        Err(DecodeError::other(format!("{d} is not a finite number")))
    }
}

struct Items {
    items: std::vec::IntoIter<Value>,
    index: usize,
}

impl Items {
    fn new(items: Vec<Value>) -> Items {
        Items {
            items: items.into_iter(),
            index: 0,
        }
    }
}

impl<'de> SeqAccess<'de> for Items {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let i = self.index;
        self.index += 1;
        seed.deserialize(ValueDeserializer(item))
            .map(Some)
            .map_err(|e| e.at_index(i))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Members {
    members: std::collections::btree_map::IntoIter<String, Value>,
    /// The member whose key was just read: its value comes next, and errors name it.
    current: Option<(String, Value)>,
}

impl Members {
    fn new(members: Struct) -> Members {
        Members {
            members: members.into_iter(),
            current: None,
        }
    }
}

impl<'de> MapAccess<'de> for Members {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        let Some((key, value)) = self.members.next() else {
            return Ok(None);
        };
        let k = seed.deserialize(ValueDeserializer(Value::String(key.clone())))?;
        self.current = Some((key, value));
        Ok(Some(k))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<T::Value, DecodeError> {
        let Some((key, value)) = self.current.take() else {
            return Err(DecodeError::other(
                "a member's value was read before its name",
            ));
        };
        seed.deserialize(ValueDeserializer(value))
            .map_err(|e| e.in_member(&key))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

struct Variant {
    variant: String,
    value: Value,
}

impl<'de> EnumAccess<'de> for Variant {
    type Error = DecodeError;
    type Variant = VariantValue;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, VariantValue), DecodeError> {
        let v = seed.deserialize(ValueDeserializer(Value::String(self.variant.clone())))?;
        Ok((
            v,
            VariantValue {
                variant: self.variant,
                value: self.value,
            },
        ))
    }
}

struct VariantValue {
    variant: String,
    value: Value,
}

impl<'de> VariantAccess<'de> for VariantValue {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<(), DecodeError> {
        match self.value {
            Value::Nil => Ok(()),
            other => Err(DecodeError::wrong_type("nil", &other).in_member(&self.variant)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DecodeError> {
        seed.deserialize(ValueDeserializer(self.value))
            .map_err(|e| e.in_member(&self.variant))
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_seq(ValueDeserializer(self.value), visitor)
            .map_err(|e| e.in_member(&self.variant))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_map(ValueDeserializer(self.value), visitor)
            .map_err(|e| e.in_member(&self.variant))
    }
}

/// The name `Value` asks to be deserialized under. `ValueDeserializer` answers it with the two
/// types serde's data model would blur, an `<i8>` that fits 32 bits (an integer to serde, so
/// `<int>` again) and a dateTime (text to serde, so `<string>`), as the enum [`Exact`]; every
/// other deserializer sees a plain newtype. A call inside `system.multicall` is decoded from a
/// `Value`, and must be read exactly as the same call on its own would be.
const EXACT: &str = "$cairn::xmlrpc::Value";

const I8_TAG: &str = "i8";
const DATETIME_TAG: &str = "dateTime.iso8601";

/// A value whose XML-RPC type serde alone would lose, tagged with it.
enum Exact {
    I8(i64),
    DateTime(String),
}

impl<'de> EnumAccess<'de> for Exact {
    type Error = DecodeError;
    type Variant = Exact;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Exact), DecodeError> {
        let tag = match self {
            Exact::I8(_) => I8_TAG,
            Exact::DateTime(_) => DATETIME_TAG,
        };
        let v = seed.deserialize(de::value::StrDeserializer::<DecodeError>::new(tag))?;
        Ok((v, self))
    }
}

impl<'de> VariantAccess<'de> for Exact {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<(), DecodeError> {
        Err(DecodeError::other("an exact value carries data"))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DecodeError> {
        match self {
            Exact::I8(i) => seed.deserialize(i.into_deserializer()),
            Exact::DateTime(s) => seed.deserialize(s.into_deserializer()),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, DecodeError> {
        Err(DecodeError::other("an exact value is not a tuple"))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DecodeError> {
        Err(DecodeError::other("an exact value is not a struct"))
    }
}

impl<'de> de::Deserialize<'de> for Value {
    /// Any value, as it is: for members whose type the action leaves open (a batch's params).
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_newtype_struct(EXACT, AnyValue)
    }
}

struct AnyValue;

impl<'de> Visitor<'de> for AnyValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any XML-RPC value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(i32::try_from(v).map_or(Value::I8(v), Value::Int))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(|i| self.visit_i64::<E>(i))
            .map_err(|_| E::custom(format!("{v} does not fit a 64-bit signed integer")))?
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Double(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Base64(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Base64(v.to_vec()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(AnyValue)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Struct::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            members.insert(k, v);
        }
        Ok(Value::Struct(members))
    }
    /// A deserializer that does not know [`EXACT`]: the value is whatever it holds.
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(AnyValue)
    }
    /// [`ValueDeserializer`]'s answer to [`EXACT`].
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, variant): (String, _) = data.variant()?;
        match tag.as_str() {
            I8_TAG => variant.newtype_variant().map(Value::I8),
            DATETIME_TAG => variant.newtype_variant().map(Value::DateTime),
            other => Err(de::Error::custom(format!(
                "{other:?} is not an XML-RPC type"
            ))),
        }
    }
}
