//! Valid instances of any `Deserialize` type, made by a deserializer that answers every
//! question the type asks: a struct gets every field, an enum one of its variants, an `Option`
//! `Some` (or `None`), a sequence an item or two. The fuzzers seed themselves with these, so a
//! new API action or a new member of a spec is in the corpus without anyone writing a sample.

use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::Rng;

/// Why a type could not be made (a `Deserialize` impl that refused what it was given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Refused(msg.to_string())
    }
}

/// A `T` with every optional part present (`full`) or absent, the rest chosen by `rng`.
pub fn fabricate<T: DeserializeOwned>(rng: &mut Rng, full: bool) -> Result<T, Refused> {
    T::deserialize(Maker {
        rng,
        full,
        depth: 0,
        key: "",
    })
}

/// Plausible strings, by the member they are for: what the API's own checks take, so seeds
/// get past the shape check into the daemons' validation.
fn text_for(key: &str, rng: &mut Rng) -> String {
    let choices: &[&str] = match key {
        "subnet" => &["10.0.0.0/24", "192.168.7.0/24", "fd00::/64"],
        "address" | "addresses" => &["10.0.0.2/24", "192.168.7.1/24"],
        "gateway" => &["10.0.0.1"],
        "mac" | "macs" => &["52:54:00:12:34:56"],
        "sha256" => &["sha256:0000000000000000000000000000000000000000000000000000000000000000"],
        "kernel" | "initrd" | "path" | "dir" | "netns" => &["/tmp/cairn-fuzz"],
        "cpuset" => &["0", "0-1"],
        "bond_mode" => &["active-backup", "802.3ad"],
        "method" | "methodName" => &["system.listMethods", "host.info"],
        "cmdline" => &["console=ttyS0"],
        "data" => &["ls\n"],
        "argv" | "command" => &["/bin/true"],
        _ => &["lan", "web1", "eth0", "fuzz"],
    };
    choices[rng.below(choices.len())].to_string()
}

struct Maker<'r> {
    rng: &'r mut Rng,
    full: bool,
    depth: usize,
    /// The struct member being made: picks plausible text.
    key: &'static str,
}

/// Deep enough for every spec; a recursive type stops here with empty collections.
const MAX_DEPTH: usize = 8;

impl<'r> Maker<'r> {
    fn child(&mut self, key: &'static str) -> Maker<'_> {
        Maker {
            rng: self.rng,
            full: self.full,
            depth: self.depth + 1,
            key,
        }
    }

    fn count(&mut self) -> usize {
        if !self.full || self.depth >= MAX_DEPTH {
            0
        } else {
            1 + self.rng.below(2)
        }
    }

    fn small(&mut self) -> u8 {
        1 + self.rng.below(100) as u8
    }
}

macro_rules! small_int {
    ($method:ident, $visit:ident, $t:ty) => {
        fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Refused> {
            // 1 to 100 fits every integer type.
            visitor.$visit(self.small() as $t)
        }
    };
}

impl<'de> de::Deserializer<'de> for Maker<'_> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Refused> {
        // A member whose type is left open (an XML-RPC value), or the members serde buffers
        // for a flattened map (object counts): a small number suits both.
        visitor.visit_u64(u64::from(self.small()))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_bool(self.rng.chance(1, 2))
    }

    small_int!(deserialize_i8, visit_i8, i8);
    small_int!(deserialize_i16, visit_i16, i16);
    small_int!(deserialize_i32, visit_i32, i32);
    small_int!(deserialize_i64, visit_i64, i64);
    small_int!(deserialize_u8, visit_u8, u8);
    small_int!(deserialize_u16, visit_u16, u16);
    small_int!(deserialize_u32, visit_u32, u32);
    small_int!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_f32(1.5)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_f64(1.5)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_char('x')
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_string(text_for(self.key, self.rng))
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_byte_buf(b"fuzz".to_vec())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_byte_buf(b"fuzz".to_vec())
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Refused> {
        if self.full && self.depth < MAX_DEPTH {
            let key = self.key;
            visitor.visit_some(self.child(key))
        } else {
            visitor.visit_none()
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Refused> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Refused> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Refused> {
        let left = self.count();
        visitor.visit_seq(Items { maker: self, left })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Refused> {
        visitor.visit_seq(Items {
            maker: self,
            left: len,
        })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Refused> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Refused> {
        let n = self.count();
        let keys = ["a", "b"].into_iter().take(n).collect();
        visitor.visit_map(Members {
            maker: self,
            keys,
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Refused> {
        visitor.visit_map(Members {
            maker: self,
            keys: fields.to_vec(),
            next: 0,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Refused> {
        let Some(&variant) = self.rng.pick(variants) else {
            return Err(Refused("an enum without variants".into()));
        };
        visitor.visit_enum(Variant {
            maker: self,
            variant,
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_unit()
    }
}

struct Items<'r> {
    maker: Maker<'r>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Refused> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let key = self.maker.key;
        seed.deserialize(self.maker.child(key)).map(Some)
    }
}

struct Members<'r> {
    maker: Maker<'r>,
    keys: Vec<&'static str>,
    next: usize,
}

impl<'de> MapAccess<'de> for Members<'_> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Refused> {
        let Some(&key) = self.keys.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Refused> {
        let key = self.keys.get(self.next).copied().unwrap_or("");
        self.next += 1;
        seed.deserialize(self.maker.child(key))
    }
}

struct Variant<'r> {
    maker: Maker<'r>,
    variant: &'static str,
}

impl<'de, 'r> EnumAccess<'de> for Variant<'r> {
    type Error = Refused;
    type Variant = Maker<'r>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Maker<'r>), Refused> {
        let v = seed.deserialize(self.variant.into_deserializer())?;
        Ok((v, self.maker))
    }
}

impl<'de> VariantAccess<'de> for Maker<'_> {
    type Error = Refused;

    fn unit_variant(self) -> Result<(), Refused> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        mut self,
        seed: T,
    ) -> Result<T::Value, Refused> {
        let key = self.key;
        seed.deserialize(self.child(key))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Refused> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Refused> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Spec {
        name: String,
        count: u32,
        subnet: Option<String>,
        tags: Vec<String>,
        kind: Kind,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Bridged,
        Routed,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Inner {
        on: bool,
    }

    #[test]
    fn full_and_minimal_instances() {
        let mut rng = Rng::new(5);
        let full: Spec = fabricate(&mut rng, true).unwrap_or_else(|e| panic!("{e}"));
        // Text fits the member: a subnet looks like one.
        assert!(full.subnet.as_deref().is_some_and(|s| s.contains('/')));
        assert!(!full.tags.is_empty() && full.inner.is_some());
        assert!((1..=100).contains(&full.count));
        let minimal: Spec = fabricate(&mut rng, false).unwrap_or_else(|e| panic!("{e}"));
        assert!(minimal.subnet.is_none() && minimal.tags.is_empty() && minimal.inner.is_none());
        // Both variants come up.
        let kinds: Vec<Kind> = (0..20)
            .map(|_| fabricate::<Spec>(&mut rng, false).map(|s| s.kind))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(kinds.contains(&Kind::Bridged) && kinds.contains(&Kind::Routed));
    }
}
