//! Typed columns: values the store keeps as text but the rest of Doorman only ever sees as Rust
//! types, parsed once here. A value that does not parse makes the read fail (and whatever
//! depended on it is refused), never silently becomes a default.

use sqlx::{Database, Decode, Encode, Type, encode::IsNull, error::BoxDynError};

use crate::{config::Binding, protocol::Version};

/// Implements the text encoding of a type with `as_str` and `FromStr` on every engine.
macro_rules! text_column {
    ($t:ty) => {
        impl<DB: Database> Type<DB> for $t
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $t
        where
            String: Encode<'q, DB>,
        {
            fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <String as Encode<'q, DB>>::encode(self.as_str().to_owned(), buf)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $t
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&'r str as Decode<'r, DB>>::decode(value)?;
                text.parse().map_err(Into::into)
            }
        }
    };
}

text_column!(Binding);
text_column!(Version);

/// A person's groups (from their SSO provider, or set on a local account), kept as a JSON list
/// of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Groups(pub Vec<String>);

impl Groups {
    pub fn as_str(&self) -> String {
        serde_json::to_string(&self.0).expect("a list of strings serializes")
    }
}

impl std::str::FromStr for Groups {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_str(s)
            .map(Groups)
            .map_err(|e| format!("groups are not a JSON list of strings: {e}"))
    }
}

impl<DB: Database> Type<DB> for Groups
where
    str: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as Type<DB>>::compatible(ty)
    }
}

impl<'q, DB: Database> Encode<'q, DB> for Groups
where
    String: Encode<'q, DB>,
{
    fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, DB>>::encode(self.as_str(), buf)
    }
}

impl<'r, DB: Database> Decode<'r, DB> for Groups
where
    &'r str: Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&'r str as Decode<'r, DB>>::decode(value)?;
        text.parse().map_err(Into::into)
    }
}
