//! JSON inputs that are only what they say. poem-openapi's `String` also accepts numbers and
//! booleans (`{"name": 5}` would become "5"); a client sending the wrong type has a bug we
//! should report, not paper over.
//!
//! Their schemas carry the domain's limits (`maxLength`, `maxItems`) so the document states
//! them, but they do not enforce them: the domain does, answering 422 with every field that
//! breaks its rules, where a poem-openapi validator would answer a 400 naming only the first.

use std::borrow::Cow;

use poem::http::HeaderValue;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToHeader, ToJSON, Type,
};
use serde_json::Value;

/// A string of at most `MAX` characters, as far as the document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictString<const MAX: usize>(pub String);

impl<const MAX: usize> Type for StrictString<MAX> {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        String::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            max_length: Some(MAX),
            ..MetaSchema::new("string")
        }))
    }

    fn register(registry: &mut Registry) {
        String::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<const MAX: usize> ParseFromJSON for StrictString<MAX> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Self(s)),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

impl<const MAX: usize> ParseFromParameter for StrictString<MAX> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_owned()))
    }
}

impl<const MAX: usize> ToJSON for StrictString<MAX> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

impl<const MAX: usize> ToHeader for StrictString<MAX> {
    fn to_header(&self) -> Option<HeaderValue> {
        self.0.to_header()
    }
}

/// A JSON array of at most `MAX` elements, as far as the document says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictList<T, const MAX: usize>(pub Vec<T>);

impl<T: Type, const MAX: usize> Type for StrictList<T, MAX> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Vec<T>;
    type RawElementValueType = T::RawValueType;

    fn name() -> Cow<'static, str> {
        Vec::<T>::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            items: Some(Box::new(T::schema_ref())),
            max_items: Some(MAX),
            ..MetaSchema::new("array")
        }))
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.0.iter().filter_map(Type::as_raw_value))
    }
}

impl<T: ParseFromJSON, const MAX: usize> ParseFromJSON for StrictList<T, MAX> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Vec::<T>::parse_from_json(value)
            .map(Self)
            .map_err(ParseError::propagate)
    }
}

impl<T: ToJSON, const MAX: usize> ToJSON for StrictList<T, MAX> {
    fn to_json(&self) -> Option<Value> {
        self.0.to_json()
    }
}

impl<T, const MAX: usize> Default for StrictList<T, MAX> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

// Written by serde for `JsonBody` answers: the same JSON as their `ToJSON`.
impl<const MAX: usize> serde::Serialize for StrictString<MAX> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<T: serde::Serialize, const MAX: usize> serde::Serialize for StrictList<T, MAX> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strings_parse() {
        let ok = StrictString::<5>::parse_from_json(Some(Value::String("x".into())));
        assert_eq!(ok.unwrap(), StrictString("x".into()));
        for bad in [serde_json::json!(5), serde_json::json!(true), Value::Null] {
            assert!(StrictString::<5>::parse_from_json(Some(bad)).is_err());
        }
        assert!(StrictString::<5>::parse_from_json(None).is_err());
    }

    #[test]
    fn limits_are_stated_not_enforced() {
        let long = StrictString::<2>::parse_from_json(Some(Value::String("abc".into())));
        assert_eq!(
            long.unwrap().0,
            "abc",
            "the domain answers 422 for it, not the parser"
        );
        let MetaSchemaRef::Inline(schema) = StrictList::<StrictString<3>, 1>::schema_ref() else {
            panic!("an inline schema");
        };
        assert_eq!(schema.max_items, Some(1));
        let many =
            StrictList::<StrictString<3>, 1>::parse_from_json(Some(serde_json::json!(["a", "b"])));
        assert_eq!(many.unwrap().0.len(), 2);
    }
}
