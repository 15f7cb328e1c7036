//! A deserializer over a [`serde_json::Value`] that notes which objects it read as structs.
//! serde reports struct fields and map keys alike (serde_path_to_error's `Segment::Map`);
//! knowing which objects' keys were read as field identifiers, an error path can show our
//! field names and hide the keys of the peer's maps.
//!
//! A key on an error path whose object was read as a struct is a field the struct knows:
//! unknown fields are skipped (their value cannot fail) or refused at the key (`unknown
//! field`, whose last segment the caller drops). Otherwise it behaves as serde_json's own
//! `Value` deserializer does, including map keys that decode as numbers or booleans
//! (`HashMap<u32, _>` from `{"1": …}`).

use std::cell::RefCell;
use std::collections::HashSet;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Error, Value};

/// The objects (by address, while the value is borrowed) whose keys were read as field
/// identifiers.
#[derive(Debug, Default)]
pub(crate) struct Fields(RefCell<HashSet<usize>>);

impl Fields {
    /// Whether `object`'s keys were read as field names.
    pub(crate) fn named(&self, object: &serde_json::Map<String, Value>) -> bool {
        self.0.borrow().contains(&address(object))
    }
}

fn address(object: &serde_json::Map<String, Value>) -> usize {
    std::ptr::from_ref(object) as usize
}

/// Deserializes a borrowed value, recording struct field names into `fields`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe<'de, 'f> {
    value: &'de Value,
    fields: &'f Fields,
}

impl<'de, 'f> Probe<'de, 'f> {
    pub(crate) fn new(value: &'de Value, fields: &'f Fields) -> Self {
        Self { value, fields }
    }

    fn at(self, value: &'de Value) -> Self {
        Self { value, fields: self.fields }
    }
}

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (None, Some(i), _) => Unexpected::Signed(i),
            (None, None, Some(f)) => Unexpected::Float(f),
            (None, None, None) => Unexpected::Other("number"),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

impl<'de> IntoDeserializer<'de, Error> for Probe<'de, '_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for Probe<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                (None, None, None) => Err(de::Error::custom("number out of range")),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = Seq { items: items.iter(), probe: self };
                let out = visitor.visit_seq(&mut seq)?;
                match seq.items.len() {
                    0 => Ok(out),
                    _ => Err(de::Error::invalid_length(items.len(), &"fewer elements in array")),
                }
            }
            Value::Object(map) => {
                let mut access =
                    Map { object: address(map), entries: map.iter(), value: None, probe: self };
                let out = visitor.visit_map(&mut access)?;
                match access.entries.len() {
                    0 => Ok(out),
                    _ => Err(de::Error::invalid_length(map.len(), &"fewer elements in map")),
                }
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.value {
            Value::String(variant) => visitor.visit_enum(BorrowedStrDeserializer::new(variant)),
            Value::Object(map) if map.len() == 1 => match map.iter().next() {
                Some((variant, value)) => {
                    visitor.visit_enum(Enum { variant, content: self.at(value) })
                }
                None => Err(de::Error::invalid_length(0, &"a map with a single key")),
            },
            other => {
                Err(de::Error::invalid_type(unexpected(other), &"a string or a map with one key"))
            }
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct Seq<'de, 'f> {
    items: std::slice::Iter<'de, Value>,
    probe: Probe<'de, 'f>,
}

impl<'de> SeqAccess<'de> for Seq<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.items.next().map(|item| seed.deserialize(self.probe.at(item))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'de, 'f> {
    object: usize,
    entries: serde_json::map::Iter<'de>,
    value: Option<&'de Value>,
    probe: Probe<'de, 'f>,
}

impl<'de> MapAccess<'de> for Map<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(Key { key, object: self.object, fields: self.probe.fields }).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(self.probe.at(value)),
            None => Err(de::Error::custom("value is missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Enum<'de, 'f> {
    variant: &'de str,
    content: Probe<'de, 'f>,
}

impl<'de, 'f> EnumAccess<'de> for Enum<'de, 'f> {
    type Error = Error;
    type Variant = Probe<'de, 'f>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let variant = seed.deserialize(BorrowedStrDeserializer::<Error>::new(self.variant))?;
        Ok((variant, self.content))
    }
}

impl<'de> VariantAccess<'de> for Probe<'de, '_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.value {
            Value::Null => Ok(()),
            other => Err(de::Error::invalid_type(unexpected(other), &"unit variant")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

/// A map key: a string that also decodes as a number or a boolean, as JSON object keys do in
/// serde_json. Read as an identifier, it marks its object as a struct's.
struct Key<'de, 'f> {
    key: &'de str,
    object: usize,
    fields: &'f Fields,
}

macro_rules! parse_key {
    ($($method:ident => $visit:ident,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.key.parse() {
                Ok(n) => visitor.$visit(n),
                Err(_) => visitor.visit_borrowed_str(self.key),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Key<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.key)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.fields.0.borrow_mut().insert(self.object);
        visitor.visit_borrowed_str(self.key)
    }

    parse_key! {
        deserialize_bool => visit_bool,
        deserialize_i8 => visit_i8,
        deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32,
        deserialize_i64 => visit_i64,
        deserialize_i128 => visit_i128,
        deserialize_u8 => visit_u8,
        deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64,
        deserialize_u128 => visit_u128,
        deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(BorrowedStrDeserializer::new(self.key))
    }

    forward_to_deserialize_any! {
        char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, HashMap};

    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn probe<T: for<'de> Deserialize<'de>>(value: &Value) -> (Result<T, Error>, Fields) {
        let fields = Fields::default();
        let out = T::deserialize(Probe::new(value, &fields));
        (out, fields)
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Shape {
        Dot,
        Circle(f64),
        Rect { w: u32, h: u32 },
        Pair(u8, u8),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct All {
        name: String,
        n: i64,
        maybe: Option<u8>,
        list: Vec<u16>,
        by_id: HashMap<u32, bool>,
        flags: BTreeMap<bool, String>,
        shapes: Vec<Shape>,
        tuple: (u8, String),
        #[serde(default)]
        missing: Option<String>,
    }

    #[test]
    fn decodes_as_serde_json_does_and_marks_struct_objects() {
        let value = json!({
            "name": "a", "n": -3, "maybe": null, "list": [1, 2],
            "by_id": {"7": true}, "flags": {"true": "yes"},
            "shapes": ["dot", {"circle": 1.5}, {"rect": {"w": 1, "h": 2}}, {"pair": [1, 2]}],
            "tuple": [1, "x"], "extra": {"ignored": [1]}
        });
        let (got, fields) = probe::<All>(&value);
        let expected: All = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(got.unwrap(), expected);
        assert!(fields.named(value.as_object().unwrap()));
        assert!(fields.named(value["shapes"][2]["rect"].as_object().unwrap()));
        // Maps are not structs; ignored values are not read at all.
        assert!(!fields.named(value["by_id"].as_object().unwrap()));
        assert!(!fields.named(value["extra"].as_object().unwrap()));
    }

    #[test]
    fn errors_say_what_serde_json_says() {
        for (value, message) in [
            (json!({"w": "x", "h": 1}), r#"invalid type: string "x", expected u32"#),
            (json!({"w": -1, "h": 1}), "invalid value: integer `-1`, expected u32"),
            (json!({"w": 1}), "missing field `h`"),
            (json!([1]), "invalid length 1, expected struct Rect with 2 elements"),
        ] {
            #[derive(Debug, Deserialize)]
            #[allow(dead_code)]
            struct Rect {
                w: u32,
                h: u32,
            }
            let (got, _) = probe::<Rect>(&value);
            let theirs = serde_json::from_value::<Rect>(value.clone()).unwrap_err();
            assert_eq!(got.unwrap_err().to_string(), message);
            assert_eq!(theirs.to_string(), message);
        }
        let (got, _) = probe::<Vec<u8>>(&json!([1, 2, 3]));
        assert_eq!(got.unwrap(), vec![1, 2, 3]);
        let (got, _) = probe::<(u8,)>(&json!([1, 2]));
        assert!(got.is_err());
    }
}
