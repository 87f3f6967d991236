//! Bounded UTF-8 text: the only string type on the wire.
//!
//! Every string field has a byte limit chosen for what it carries (see [`crate::messages`]);
//! building or decoding a longer one fails with [`TooLong`] instead of allocating.

use core::fmt;
use core::ops::Deref;

/// UTF-8 text of at most `N` bytes, stored inline.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<const N: usize>(heapless::String<N>);

/// A value was longer than the field allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    /// The field's limit (bytes for text, entries for lists).
    pub limit: usize,
    /// The length that was offered.
    pub actual: usize,
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} exceeds the limit of {}", self.actual, self.limit)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TooLong {}

impl<const N: usize> Text<N> {
    /// The byte limit of this text type.
    pub const LIMIT: usize = N;

    /// Copies `s`, failing when it is longer than `N` bytes.
    pub fn new(s: &str) -> Result<Self, TooLong> {
        let mut inner = heapless::String::new();
        inner.push_str(s).map_err(|_| TooLong {
            limit: N,
            actual: s.len(),
        })?;
        Ok(Self(inner))
    }

    /// The text as a `&str`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl<const N: usize> Deref for Text<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl<const N: usize> TryFrom<&str> for Text<N> {
    type Error = TooLong;
    fn try_from(s: &str) -> Result<Self, TooLong> {
        Self::new(s)
    }
}

impl<const N: usize> PartialEq<str> for Text<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for Text<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_within_the_limit_is_kept_verbatim() {
        let t = Text::<5>::new("héllo".get(..4).unwrap_or("")).unwrap();
        assert_eq!(t, "hél");
        assert_eq!(Text::<5>::new("hello").unwrap().as_str(), "hello");
    }

    #[test]
    fn text_over_the_limit_reports_limit_and_length() {
        assert_eq!(
            Text::<4>::new("hello"),
            Err(TooLong {
                limit: 4,
                actual: 5
            })
        );
    }
}
