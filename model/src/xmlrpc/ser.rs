//! serde types straight into XML-RPC values: the API's typed results are encoded here.
//!
//! Integers are `<int>` when they fit in 32 bits (what every client reads) and `<i8>` otherwise;
//! `None` members are left out of structs (plain XML-RPC has no null) and are `<nil/>` elsewhere;
//! unit enum variants are strings. A non-finite double or a map with non-string keys is an error.

use std::fmt;

use serde::ser::{self, Serialize};

use super::{Struct, Value};

/// Why a value cannot be written as XML-RPC. Always a bug in the type being encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode as XML-RPC: {0}")]
pub struct EncodeError(String);

impl ser::Error for EncodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        EncodeError(msg.to_string())
    }
}

/// Encodes `t` as an XML-RPC value.
pub fn to_value<T: Serialize + ?Sized>(t: &T) -> Result<Value, EncodeError> {
    t.serialize(ValueSerializer)
}

/// A serializer whose output is one [`Value`].
pub struct ValueSerializer;

fn int(n: i64) -> Value {
    i32::try_from(n).map_or(Value::I8(n), Value::Int)
}

fn uint(n: u64) -> Result<Value, EncodeError> {
    i64::try_from(n)
        .map(int)
        .map_err(|_| EncodeError(format!("{n} does not fit XML-RPC's 64-bit signed <i8>")))
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = EncodeError;
    type SerializeSeq = Items;
    type SerializeTuple = Items;
    type SerializeTupleStruct = Items;
    type SerializeTupleVariant = VariantItems;
    type SerializeMap = Members;
    type SerializeStruct = Members;
    type SerializeStructVariant = VariantMembers;

    fn serialize_bool(self, v: bool) -> Result<Value, EncodeError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, EncodeError> {
        Ok(int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, EncodeError> {
        Ok(int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, EncodeError> {
        Ok(Value::Int(v))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, EncodeError> {
        Ok(int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, EncodeError> {
        Ok(int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, EncodeError> {
        Ok(int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, EncodeError> {
        Ok(int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, EncodeError> {
        uint(v)
    }
    fn serialize_f32(self, v: f32) -> Result<Value, EncodeError> {
        self.serialize_f64(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<Value, EncodeError> {
        if v.is_finite() {
            Ok(Value::Double(v))
        } else {
            Err(EncodeError(format!("{v} is not a finite number")))
        }
    }
    fn serialize_char(self, v: char) -> Result<Value, EncodeError> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, EncodeError> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, EncodeError> {
        Ok(Value::Base64(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, EncodeError> {
        Ok(Value::Nil)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, EncodeError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, EncodeError> {
        Ok(Value::Nil)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, EncodeError> {
        Ok(Value::Nil)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, EncodeError> {
        Ok(Value::String(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, EncodeError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, EncodeError> {
        Ok(Value::structure([(variant, to_value(value)?)]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Items, EncodeError> {
        Ok(Items(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<Items, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Items, EncodeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantItems, EncodeError> {
        Ok(VariantItems(variant, Items(Vec::with_capacity(len))))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Members, EncodeError> {
        Ok(Members::default())
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Members, EncodeError> {
        Ok(Members::default())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantMembers, EncodeError> {
        Ok(VariantMembers(variant, Members::default()))
    }
}

pub struct Items(Vec<Value>);

impl ser::SerializeSeq for Items {
    type Ok = Value;
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        self.0.push(to_value(value)?);
        Ok(())
    }
    fn end(self) -> Result<Value, EncodeError> {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeTuple for Items {
    type Ok = Value;
    type Error = EncodeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, EncodeError> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Items {
    type Ok = Value;
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, EncodeError> {
        ser::SerializeSeq::end(self)
    }
}

pub struct VariantItems(&'static str, Items);

impl ser::SerializeTupleVariant for VariantItems {
    type Ok = Value;
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        ser::SerializeSeq::serialize_element(&mut self.1, value)
    }
    fn end(self) -> Result<Value, EncodeError> {
        Ok(Value::structure([(self.0, Value::Array(self.1.0))]))
    }
}

#[derive(Default)]
pub struct Members {
    members: Struct,
    key: Option<String>,
}

impl Members {
    /// Adds a member; a `None` (nil) member is left out, as plain XML-RPC has no null.
    fn insert(&mut self, key: String, value: Value) {
        if value != Value::Nil {
            self.members.insert(key, value);
        }
    }
}

impl ser::SerializeMap for Members {
    type Ok = Value;
    type Error = EncodeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        match to_value(key)? {
            Value::String(k) => {
                self.key = Some(k);
                Ok(())
            }
            other => Err(EncodeError(format!(
                "struct member names must be strings, got {}",
                other.type_name()
            ))),
        }
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| EncodeError("a map value came before its key".into()))?;
        let value = to_value(value)?;
        self.insert(key, value);
        Ok(())
    }
    fn end(self) -> Result<Value, EncodeError> {
        Ok(Value::Struct(self.members))
    }
}

impl ser::SerializeStruct for Members {
    type Ok = Value;
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        let value = to_value(value)?;
        self.insert(key.to_string(), value);
        Ok(())
    }
    fn end(self) -> Result<Value, EncodeError> {
        Ok(Value::Struct(self.members))
    }
}

pub struct VariantMembers(&'static str, Members);

impl ser::SerializeStructVariant for VariantMembers {
    type Ok = Value;
    type Error = EncodeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        ser::SerializeStruct::serialize_field(&mut self.1, key, value)
    }
    fn end(self) -> Result<Value, EncodeError> {
        Ok(Value::structure([(self.0, Value::Struct(self.1.members))]))
    }
}

impl Serialize for Value {
    fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use ser::{SerializeMap, SerializeSeq};
        match self {
            Value::Int(i) => s.serialize_i32(*i),
            Value::I8(i) => s.serialize_i64(*i),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::String(v) | Value::DateTime(v) => s.serialize_str(v),
            Value::Double(d) => s.serialize_f64(*d),
            Value::Base64(b) => s.serialize_bytes(b),
            Value::Struct(members) => {
                let mut m = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Nil => s.serialize_unit(),
        }
    }
}
