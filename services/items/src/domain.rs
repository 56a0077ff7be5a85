//! Item domain types. Each is parsed once at the edge (`parse`, never "validate later"), so
//! code past the API layer cannot hold an invalid name, tag or zone.

use platform::problem::FieldError;

pub const NAME_MAX_CHARS: usize = 100;
pub const DESCRIPTION_MAX_CHARS: usize = 2000;
pub const TAG_MAX_CHARS: usize = 32;
pub const TAGS_MAX: usize = 10;

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// What a name, and so any text a name can contain, must be: non-empty, at most
/// `NAME_MAX_CHARS` characters, no control characters.
fn check_name_text(text: &str) -> Result<(), FieldError> {
    if text.is_empty() {
        return Err(field_error("name", "must not be empty"));
    }
    let chars = text.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(field_error(
            "name",
            format!("must be at most {NAME_MAX_CHARS} characters (got {chars})"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(field_error("name", "must not contain control characters"));
    }
    Ok(())
}

/// The text a name filter looks for: 1–100 characters, without control characters (no name
/// holds one, and a NUL is not even text to PostgreSQL). Kept as given, not trimmed: a space
/// inside a name can be what is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameNeedle(String);

impl NameNeedle {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        check_name_text(raw)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for NameNeedle {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A trimmed, non-empty item name of at most 100 characters, without control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemName(String);

impl ItemName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        check_name_text(name)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text of at most 2000 characters; newlines and tabs allowed, other control characters not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let chars = raw.chars().count();
        if chars > DESCRIPTION_MAX_CHARS {
            return Err(field_error(
                "description",
                format!("must be at most {DESCRIPTION_MAX_CHARS} characters (got {chars})"),
            ));
        }
        if raw
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(field_error(
                "description",
                "must not contain control characters other than newline and tab",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tag: 1–32 characters of lowercase ASCII letters, digits and `-`. Input is lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldError> {
        let tag = raw.trim().to_ascii_lowercase();
        if tag.is_empty() || tag.len() > TAG_MAX_CHARS {
            return Err(field_error(
                field,
                format!("must be 1 to {TAG_MAX_CHARS} characters"),
            ));
        }
        if !tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(field_error(
                field,
                format!("{raw:?} may contain only letters a-z, digits and '-'"),
            ));
        }
        Ok(Self(tag))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// At most 10 distinct tags, in the order given (duplicates after normalising are dropped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(Vec<Tag>);

impl Tags {
    /// Parses every tag and reports every bad one, not just the first.
    pub fn parse(raw: &[String]) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut tags: Vec<Tag> = Vec::with_capacity(raw.len());
        for (i, t) in raw.iter().enumerate() {
            match Tag::parse(t, &format!("tags[{i}]")) {
                Ok(tag) if !tags.contains(&tag) => tags.push(tag),
                Ok(_duplicate) => {}
                Err(e) => errors.push(e),
            }
        }
        if tags.len() > TAGS_MAX {
            errors.push(field_error(
                "tags",
                format!("at most {TAGS_MAX} tags (got {})", tags.len()),
            ));
        }
        if errors.is_empty() {
            Ok(Self(tags))
        } else {
            Err(errors)
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tag> {
        self.0.iter()
    }
}

/// What a new or fully replaced item consists of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemFields {
    pub name: ItemName,
    pub description: Option<Description>,
    pub tags: Tags,
}

impl ItemFields {
    /// Parses all three fields, collecting every problem for one 422 answer.
    pub fn parse(
        name: &str,
        description: Option<&str>,
        tags: &[String],
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = ItemName::parse(name).map_err(|e| errors.push(e)).ok();
        let description = description
            .map(Description::parse)
            .transpose()
            .map_err(|e| errors.push(e))
            .ok();
        let tags = Tags::parse(tags).map_err(|e| errors.extend(e)).ok();
        match (name, description, tags) {
            (Some(name), Some(description), Some(tags)) if errors.is_empty() => Ok(Self {
                name,
                description,
                tags,
            }),
            _ => Err(errors),
        }
    }
}

impl ItemFields {
    /// The fields of a row this store wrote, taken as they are: every row was written from
    /// parsed fields (SQLite's writer, the PostgreSQL statements, seed-items through the same
    /// store), so parsing it again on every read only cost time, about 5,000 instructions an
    /// item (`Tags::parse` formatted a field name per tag). `tags` is the row's comma-joined
    /// column.
    pub(crate) fn from_store(name: String, description: Option<String>, tags: &str) -> Self {
        let tags = if tags.is_empty() {
            Vec::new()
        } else {
            tags.split(',').map(|t| Tag(t.to_owned())).collect()
        };
        Self {
            name: ItemName(name),
            description: description.map(Description),
            tags: Tags(tags),
        }
    }
}

/// A change to some fields of an item (JSON merge-patch semantics: absent = unchanged,
/// `description: null` = removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemPatch {
    pub name: Option<ItemName>,
    pub description: Option<Option<Description>>,
    pub tags: Option<Tags>,
}

impl ItemPatch {
    pub fn apply_to(&self, current: &ItemFields) -> ItemFields {
        ItemFields {
            name: self.name.clone().unwrap_or_else(|| current.name.clone()),
            description: self
                .description
                .clone()
                .unwrap_or_else(|| current.description.clone()),
            tags: self.tags.clone().unwrap_or_else(|| current.tags.clone()),
        }
    }
}

/// An IANA zone name as the caller wrote it, checked only for shape: the timezones service
/// decides whether it exists. The shape check keeps arbitrary text out of upstream URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneName(String);

impl ZoneName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let ok_len = (1..=64).contains(&raw.len());
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
        if ok_len && ok_chars {
            Ok(Self(raw.to_owned()))
        } else {
            Err(field_error(
                "tz",
                format!("{raw:?} is not an IANA time zone name such as Europe/Paris"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The longest `Idempotency-Key` accepted.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;

/// A client's `Idempotency-Key` (IETF httpapi idempotency-key draft): a structured-field string
/// such as `"8e03978e-40d5-43e8-bc93-6894a57f9324"`. The bare form without quotes, which many
/// clients send, is accepted too. 1–255 visible ASCII characters; no `"` or `\` inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let inner = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        let ok_len = (1..=IDEMPOTENCY_KEY_MAX_CHARS).contains(&inner.len());
        let ok_chars = inner
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
        if ok_len && ok_chars {
            Ok(Self(inner.to_owned()))
        } else {
            Err(field_error(
                "Idempotency-Key",
                format!(
                    "must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters without \" or \\, \
                     optionally in double quotes, e.g. \"8e03978e-40d5-43e8-bc93-6894a57f9324\""
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `If-Match` precondition of a write (RFC 9110 §13.1.1), in terms of item versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No `If-Match`: write unconditionally.
    None,
    /// `If-Match: *`: the item must exist.
    Exists,
    /// The item's current version must be one of these.
    OneOf(Vec<i64>),
}

impl Precondition {
    /// Parses an `If-Match` value. ETags are `"<version>"`; weak tags (`W/"..."`) never match,
    /// since `If-Match` uses strong comparison; unparseable tags match nothing.
    pub fn from_if_match(header: Option<&str>) -> Self {
        let Some(header) = header else {
            return Self::None;
        };
        if header.trim() == "*" {
            return Self::Exists;
        }
        Self::OneOf(
            header
                .split(',')
                .filter_map(|tag| {
                    tag.trim()
                        .strip_prefix('"')?
                        .strip_suffix('"')?
                        .parse()
                        .ok()
                })
                .collect(),
        )
    }

    pub fn allows(&self, current_version: i64) -> bool {
        match self {
            Self::None | Self::Exists => true,
            Self::OneOf(versions) => versions.contains(&current_version),
        }
    }
}

/// The strong ETag of an item version.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_needles_refuse_control_characters_and_keep_spaces() {
        assert_eq!(NameNeedle::parse(" a b ").unwrap().as_str(), " a b ");
        for bad in ["", "ab\0cd", "\u{7}", "a\nb", "\u{85}"] {
            let error = NameNeedle::parse(bad).unwrap_err();
            assert_eq!(error.field, "name", "{bad:?}");
        }
        assert!(NameNeedle::parse(&"é".repeat(NAME_MAX_CHARS)).is_ok());
        assert!(NameNeedle::parse(&"é".repeat(NAME_MAX_CHARS + 1)).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(ItemName::parse("  lamp ").unwrap().as_str(), "lamp");
        assert!(ItemName::parse("   ").is_err());
        assert!(ItemName::parse(&"x".repeat(100)).is_ok());
        assert!(ItemName::parse(&"x".repeat(101)).is_err());
        assert!(
            ItemName::parse(&"é".repeat(100)).is_ok(),
            "bounds count characters, not bytes"
        );
        assert!(ItemName::parse("bad\u{7}bell").is_err());
    }

    #[test]
    fn tags_are_normalised_deduplicated_and_bounded() {
        let tags = Tags::parse(&["Red".into(), "red".into(), "big-one".into()]).unwrap();
        assert_eq!(
            tags.iter().map(Tag::as_str).collect::<Vec<_>>(),
            ["red", "big-one"]
        );
        let too_many: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        assert_eq!(Tags::parse(&too_many).unwrap_err()[0].field, "tags");
        let errors = Tags::parse(&["ok".into(), "no spaces".into(), "".into()]).unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["tags[1]", "tags[2]"]
        );
    }

    #[test]
    fn item_fields_report_every_problem() {
        let errors = ItemFields::parse("", Some("ok"), &["BAD TAG".into()]).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "tags[0]"]);
    }

    #[test]
    fn patch_changes_only_what_it_names() {
        let current = ItemFields::parse("a", Some("d"), &["t".into()]).unwrap();
        let patch = ItemPatch {
            description: Some(None),
            ..ItemPatch::default()
        };
        let next = patch.apply_to(&current);
        assert_eq!(next.name, current.name);
        assert_eq!(next.description, None);
        assert_eq!(next.tags, current.tags);
    }

    #[test]
    fn zone_names_are_shape_checked() {
        assert!(ZoneName::parse("America/Argentina/Buenos_Aires").is_ok());
        assert!(ZoneName::parse("Etc/GMT+5").is_ok());
        assert!(ZoneName::parse("../../admin").is_err());
        assert!(ZoneName::parse("a?b=c").is_err());
        assert!(ZoneName::parse("").is_err());
    }

    #[test]
    fn idempotency_keys_are_structured_strings_or_bare() {
        assert_eq!(
            IdempotencyKey::parse("\"abc-1\"").unwrap().as_str(),
            "abc-1"
        );
        assert_eq!(IdempotencyKey::parse("abc-1").unwrap().as_str(), "abc-1");
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in [
            "",
            "\"\"",
            "has space",
            "quo\"te",
            "back\\slash",
            "caf\u{e9}",
        ] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        assert_eq!(Precondition::from_if_match(None), Precondition::None);
        assert_eq!(Precondition::from_if_match(Some("*")), Precondition::Exists);
        let p = Precondition::from_if_match(Some("\"3\", \"5\""));
        assert!(p.allows(3) && p.allows(5) && !p.allows(4));
        assert!(!Precondition::from_if_match(Some("W/\"3\"")).allows(3));
        assert!(!Precondition::from_if_match(Some("garbage")).allows(1));
        assert_eq!(etag(7), "\"7\"");
    }
}
