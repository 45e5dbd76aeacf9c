//! Why a value was rejected, and which field it came from.

/// What is wrong with a single value, independent of where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("must not be empty")]
    Empty,
    /// Too long: `len` and `max` count bytes for text and entries for lists.
    #[error("has length {len}, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("has the character {ch:?} at byte {pos}; allowed: {allowed}")]
    BadChar {
        ch: char,
        pos: usize,
        allowed: &'static str,
    },
    /// A list whose elements' own lists together hold too many entries.
    #[error("carry {count} {what} in all, more than the {max} allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("must not be zero")]
    Zero,
    #[error("is {value}, outside {min}..={max}")]
    OutOfRange { value: u64, min: u64, max: u64 },
    #[error("is not a valid NQN ({0})")]
    Nqn(&'static str),
    #[error("is not an IP address: {0:?}")]
    Address(String),
    #[error("is missing")]
    Missing,
    #[error("has the unknown enum value {0}")]
    UnknownEnum(i32),
    #[error("must be set to a known value, not the unspecified default")]
    Unspecified,
    #[error("appears twice: {0}")]
    Duplicate(String),
    #[error("is not a UUID ({0})")]
    Uuid(&'static str),
    /// A valid value that this field does not accept (a state only the monitors may set).
    #[error("must not be {0}")]
    NotAllowed(&'static str),
}

/// A rejected field of an incoming message, named by its path (`beacon.subsystems[2].nqn`),
/// so that an operator can find the bad value from the one-line error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: Invalid,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: Invalid) -> Self {
        FieldError {
            field: field.into(),
            reason,
        }
    }

    /// Prefix the field path with the enclosing field: `nqn` becomes `subsystems[2].nqn`.
    pub fn within(mut self, parent: impl AsRef<str>) -> Self {
        self.field = format!("{}.{}", parent.as_ref(), self.field);
        self
    }
}

/// Attach a field name to a bare [`Invalid`].
pub trait Field<T> {
    fn field(self, name: &str) -> Result<T, FieldError>;
}

impl<T> Field<T> for Result<T, Invalid> {
    fn field(self, name: &str) -> Result<T, FieldError> {
        self.map_err(|reason| FieldError::new(name, reason))
    }
}
