//! `GroupKey`: the one typed id that travels as its own message.

use crate::domain::{Field, FieldError, GroupKey};
use crate::v1;

impl TryFrom<v1::GroupKey> for GroupKey {
    type Error = FieldError;

    fn try_from(wire: v1::GroupKey) -> Result<Self, FieldError> {
        Ok(GroupKey {
            pool: wire.pool.try_into().field("pool")?,
            group: wire.group.try_into().field("group")?,
        })
    }
}

impl From<GroupKey> for v1::GroupKey {
    fn from(key: GroupKey) -> Self {
        v1::GroupKey {
            pool: key.pool.into(),
            group: key.group.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Invalid;

    #[test]
    fn group_keys_round_trip_and_the_default_group_is_empty() {
        let wire = v1::GroupKey {
            pool: "rbd".into(),
            group: String::new(),
        };
        let key = GroupKey::try_from(wire.clone()).expect("valid key");
        assert_eq!(key.pool.as_str(), "rbd");
        assert_eq!(key.group.as_str(), "");
        assert_eq!(v1::GroupKey::from(key), wire);
    }

    #[test]
    fn bad_pool_and_group_are_named() {
        let err = GroupKey::try_from(v1::GroupKey {
            pool: String::new(),
            group: "g".into(),
        })
        .unwrap_err();
        assert_eq!((err.field.as_str(), err.reason), ("pool", Invalid::Empty));

        let err = GroupKey::try_from(v1::GroupKey {
            pool: "rbd".into(),
            group: "a/b".into(),
        })
        .unwrap_err();
        assert_eq!(err.field, "group");
        assert!(matches!(
            err.reason,
            Invalid::BadChar {
                ch: '/',
                pos: 1,
                ..
            }
        ));
    }
}
