//! Validated ids and names (docs/api.md §4). Adapters parse what clients send into these once;
//! inside the domain a `UserId` or `Slug` is always valid, so no service checks it again.

use std::{fmt, ops::Deref};

use crate::{domain::validate, error::FieldError};

/// A user id: printable Unicode text of 1 to 128 code points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

/// A name from `[A-Za-z0-9_.:-]`, 1 to 128 characters: event names, experiment ids, cohorts, salts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Slug(String);

impl Slug {
    /// An optional value: absent stays absent.
    pub fn parse_optional(field: &str, value: Option<String>) -> Result<Option<Self>, FieldError> {
        value.map(|value| Slug::parse(field, value)).transpose()
    }
}

macro_rules! text_newtype {
    ($name:ident, $rule:path) => {
        impl $name {
            /// The value sent as `field`, or the rule it breaks under that field's name.
            pub fn parse(field: &str, value: impl Into<String>) -> Result<Self, FieldError> {
                let value = value.into();
                $rule(&value)
                    .map(|()| $name(value))
                    .map_err(|reason| FieldError::new(field, reason))
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

text_newtype!(UserId, validate::printable_text);
text_newtype!(Slug, validate::slug);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_by_the_rules_of_their_kind_and_name_the_field() {
        let cases: [(&str, bool, bool); 6] = [
            // value, valid user id, valid slug
            ("user-1", true, true),
            ("Ωmega üser", true, false),
            ("", false, false),
            ("tab\there", false, false),
            ("level_up.v2:a-b", true, true),
            ("nul\u{0}", false, false),
        ];
        for (value, user_ok, slug_ok) in cases {
            assert_eq!(UserId::parse("userId", value).is_ok(), user_ok, "{value:?}");
            assert_eq!(Slug::parse("cohort", value).is_ok(), slug_ok, "{value:?}");
        }
        let error = Slug::parse("experimentId", "a b").unwrap_err();
        assert_eq!(error.field, "experimentId");
        assert!(
            error.reason.contains("may only contain"),
            "{}",
            error.reason
        );
        assert_eq!(Slug::parse_optional("cohort", None).unwrap(), None);
    }
}
