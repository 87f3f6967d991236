//! The CBOR codec: the only module that knows how messages look as bytes.
//!
//! Structs are CBOR maps with small unsigned keys (absent optional fields and empty lists are
//! left out, unknown keys are skipped so a newer peer can add fields); enums without data are
//! unsigned integers; enums with data are `[variant, body]`. `minicbor` does the CBOR; the
//! `wire_struct!` table below maps each field to its key, so decode errors can name the field
//! (`launch.port_mappings.host_port: ...`), which `minicbor`'s derive cannot. Swapping the
//! encoding means rewriting this module only.

use core::fmt;

use minicbor::data::Type;
use minicbor::encode::{self, Write};
use minicbor::{Decoder, Encoder};

use crate::PROTOCOL_VERSION;
use crate::messages::*;
use crate::text::Text;

/// The largest message a receiver decodes; larger payloads are rejected before parsing.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// How many field names a [`DecodeError`] keeps (deeper ones are cut from the outside).
const MAX_PATH: usize = 8;

/// What went wrong while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input ended in the middle of a value.
    Truncated,
    /// A value had another CBOR type than the field needs.
    WrongType {
        /// The type the field needs.
        expected: &'static str,
        /// The type that was found.
        found: &'static str,
    },
    /// A text or list was longer than the field's limit (bytes or entries).
    TooLong {
        /// The limit.
        limit: usize,
        /// The offered length.
        actual: usize,
    },
    /// A fixed-size value had the wrong size.
    WrongLength {
        /// The size the field needs.
        expected: usize,
        /// The size offered.
        actual: usize,
    },
    /// A number did not fit the field.
    OutOfRange {
        /// What the field holds.
        expected: &'static str,
    },
    /// An enum value this build does not know.
    UnknownVariant {
        /// The value found.
        value: u64,
    },
    /// A required field was absent.
    Missing,
    /// A field appeared twice in one map.
    Duplicate,
    /// Bytes followed the message.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The message's protocol version is not the one this build speaks.
    UnsupportedVersion {
        /// The version found.
        found: u64,
    },
    /// Not well-formed CBOR (e.g. invalid UTF-8, a reserved byte).
    Malformed,
}

/// A decode failure: what went wrong, in which field, at which byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    /// Field names, innermost first.
    path: heapless::Vec<&'static str, MAX_PATH>,
    position: usize,
}

impl DecodeError {
    fn new(kind: DecodeErrorKind, position: usize) -> Self {
        Self {
            kind,
            path: heapless::Vec::new(),
            position,
        }
    }

    /// Adds the enclosing field's name; used while the error travels outwards.
    fn in_field(mut self, name: &'static str) -> Self {
        // A path deeper than MAX_PATH keeps its innermost names; they say the most.
        let _ = self.path.push(name);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// The dotted path of the field, outermost first (`launch.port_mappings.host_port`);
    /// empty when the error is about the message as a whole.
    pub fn field(&self) -> FieldPath<'_> {
        FieldPath(&self.path)
    }

    /// The byte offset in the input where the problem was found.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// A field path for display: `a.b.c`.
#[derive(Debug, Clone, Copy)]
pub struct FieldPath<'a>(&'a [&'static str]);

impl FieldPath<'_> {
    /// Whether the path is empty (the error concerns the whole message).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl PartialEq<&str> for FieldPath<'_> {
    fn eq(&self, other: &&str) -> bool {
        let mut rest = *other;
        for (i, name) in self.0.iter().rev().enumerate() {
            if i > 0 {
                match rest.strip_prefix('.') {
                    Some(r) => rest = r,
                    None => return false,
                }
            }
            match rest.strip_prefix(name) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Truncated => f.write_str("input ends in the middle of a value"),
            Self::WrongType { expected, found } => write!(f, "expected {expected}, found {found}"),
            Self::TooLong { limit, actual } => {
                write!(f, "length {actual} exceeds the limit of {limit}")
            }
            Self::WrongLength { expected, actual } => {
                write!(f, "length {actual}, expected exactly {expected}")
            }
            Self::OutOfRange { expected } => write!(f, "value does not fit {expected}"),
            Self::UnknownVariant { value } => write!(f, "unknown value {value}"),
            Self::Missing => f.write_str("required field is missing"),
            Self::Duplicate => f.write_str("field appears twice"),
            Self::TrailingBytes { count } => write!(f, "{count} bytes follow the message"),
            Self::UnsupportedVersion { found } => write!(
                f,
                "protocol version {found} is not supported (this build speaks {PROTOCOL_VERSION})"
            ),
            Self::Malformed => f.write_str("malformed CBOR"),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{} (at byte {})", self.kind, self.position)
        } else {
            write!(
                f,
                "field `{}`: {} (at byte {})",
                self.field(),
                self.kind,
                self.position
            )
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// An encode failure: the output buffer was too small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeError;

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the output buffer is too small for the message")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

type EncResult<W> = Result<(), encode::Error<<W as Write>::Error>>;

/// A value with a CBOR form. Implemented for every message and every part of one.
pub trait Wire: Sized {
    /// Writes the value.
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W>;
    /// Reads the value.
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError>;
    /// Reads the value into `self`. Structs override this to fill their fields in place:
    /// messages are large inline values, and decoding each field into a temporary and moving
    /// it would multiply the stack a decode needs.
    fn decode_in(&mut self, d: &mut Decoder<'_>) -> Result<(), DecodeError> {
        *self = Self::decode(d)?;
        Ok(())
    }
    /// Whether a struct field holding this value is left out (`None`, an empty list).
    fn omitted(&self) -> bool {
        false
    }
    /// Whether a struct field of this type may be absent (it then keeps its default).
    fn optional() -> bool {
        false
    }
}

/// A top-level message: it carries a protocol version.
pub trait Message: Wire + Default {
    /// The message's version field.
    fn version(&self) -> u16;
}

/// Encodes `msg` into `buf`, returning the number of bytes written.
pub fn encode<M: Message>(msg: &M, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let mut cursor = minicbor::encode::write::Cursor::new(buf);
    let mut e = Encoder::new(&mut cursor);
    msg.encode(&mut e).map_err(|_| EncodeError)?;
    Ok(cursor.position())
}

/// Encodes `msg` into a new vector.
#[cfg(feature = "std")]
pub fn encode_to_vec<M: Message>(msg: &M) -> std::vec::Vec<u8> {
    let mut out = std::vec::Vec::new();
    // Writing to a Vec cannot fail.
    let _ = msg.encode(&mut Encoder::new(&mut out));
    out
}

/// Encodes any part of a message (e.g. a [`TaskSpec`] to keep it compactly).
#[cfg(feature = "std")]
pub fn encode_part_to_vec<T: Wire>(part: &T) -> std::vec::Vec<u8> {
    let mut out = std::vec::Vec::new();
    // Writing to a Vec cannot fail.
    let _ = part.encode(&mut Encoder::new(&mut out));
    out
}

/// Decodes a part written by [`encode_part_to_vec`] into `part`, in place.
pub fn decode_part_into<T: Wire>(bytes: &[u8], part: &mut T) -> Result<(), DecodeError> {
    let mut d = Decoder::new(bytes);
    part.decode_in(&mut d)?;
    if d.position() != bytes.len() {
        let count = bytes.len() - d.position();
        return Err(DecodeError::new(
            DecodeErrorKind::TrailingBytes { count },
            d.position(),
        ));
    }
    Ok(())
}

/// Decodes one message from the whole of `bytes`: no more, no fewer, and only of this
/// protocol version.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    let mut msg = M::default();
    decode_into(bytes, &mut msg)?;
    Ok(msg)
}

/// Like [`decode`], into an existing value (e.g. a `Box`), so a large message is never moved
/// on the stack. On error `msg` holds a partly decoded value and must not be used.
pub fn decode_into<M: Message>(bytes: &[u8], msg: &mut M) -> Result<(), DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::new(
            DecodeErrorKind::TooLong {
                limit: MAX_MESSAGE_BYTES,
                actual: bytes.len(),
            },
            0,
        ));
    }
    // A message of another version may mean other things by the same keys: say so first.
    if let Some(found) = peek_version(bytes)
        && found != u64::from(PROTOCOL_VERSION)
    {
        return Err(
            DecodeError::new(DecodeErrorKind::UnsupportedVersion { found }, 0).in_field("version"),
        );
    }
    let mut d = Decoder::new(bytes);
    msg.decode_in(&mut d)?;
    if msg.version() != PROTOCOL_VERSION {
        let found = u64::from(msg.version());
        return Err(
            DecodeError::new(DecodeErrorKind::UnsupportedVersion { found }, 0).in_field("version"),
        );
    }
    if d.position() != bytes.len() {
        let count = bytes.len() - d.position();
        return Err(DecodeError::new(
            DecodeErrorKind::TrailingBytes { count },
            d.position(),
        ));
    }
    Ok(())
}

/// The `command_id` (key 1) of a command too broken to decode, so its rejection can still be
/// correlated; `None` when even that cannot be found.
pub fn command_id_of(bytes: &[u8]) -> Option<&str> {
    let mut d = Decoder::new(bytes);
    let n = d.map().ok()??;
    for _ in 0..n {
        if d.u8().ok()? == 1 {
            return d.str().ok();
        }
        d.skip().ok()?;
    }
    None
}

/// The version of a message whose first map entry is key 0 (as every encoder here writes).
fn peek_version(bytes: &[u8]) -> Option<u64> {
    let mut d = Decoder::new(bytes);
    d.map().ok()?;
    if d.u8().ok()? != 0 {
        return None;
    }
    d.u64().ok()
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Bool => "bool",
        Type::Null => "null",
        Type::Undefined => "undefined",
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => "unsigned integer",
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => "negative integer",
        Type::F16 | Type::F32 | Type::F64 => "float",
        Type::Simple => "simple value",
        Type::Bytes => "byte string",
        Type::BytesIndef => "indefinite byte string",
        Type::String => "text string",
        Type::StringIndef => "indefinite text string",
        Type::Array => "array",
        Type::ArrayIndef => "indefinite array",
        Type::Map => "map",
        Type::MapIndef => "indefinite map",
        Type::Tag => "tag",
        Type::Break => "break",
        Type::Unknown(_) => "reserved byte",
    }
}

/// The type of the next value, failing on end of input.
fn peek(d: &Decoder<'_>) -> Result<Type, DecodeError> {
    d.datatype().map_err(|e| from_minicbor(&e, d.position()))
}

fn from_minicbor(e: &minicbor::decode::Error, position: usize) -> DecodeError {
    let kind = if e.is_end_of_input() {
        DecodeErrorKind::Truncated
    } else {
        DecodeErrorKind::Malformed
    };
    DecodeError::new(kind, position)
}

/// Fails unless the next value's type is one of `allowed`.
fn expect(d: &Decoder<'_>, allowed: &[Type], expected: &'static str) -> Result<(), DecodeError> {
    let t = peek(d)?;
    if allowed.contains(&t) {
        Ok(())
    } else {
        Err(DecodeError::new(
            DecodeErrorKind::WrongType {
                expected,
                found: type_name(t),
            },
            d.position(),
        ))
    }
}

fn skip(d: &mut Decoder<'_>) -> Result<(), DecodeError> {
    let p = d.position();
    d.skip().map_err(|e| from_minicbor(&e, p))
}

const UNSIGNED: &[Type] = &[Type::U8, Type::U16, Type::U32, Type::U64];

fn read_u64(d: &mut Decoder<'_>) -> Result<u64, DecodeError> {
    expect(d, UNSIGNED, "unsigned integer")?;
    let p = d.position();
    d.u64().map_err(|e| from_minicbor(&e, p))
}

/// Reads an unsigned integer that must fit `T`.
fn read_unsigned<T: TryFrom<u64>>(
    d: &mut Decoder<'_>,
    what: &'static str,
) -> Result<T, DecodeError> {
    let p = d.position();
    let v = read_u64(d)?;
    T::try_from(v).map_err(|_| DecodeError::new(DecodeErrorKind::OutOfRange { expected: what }, p))
}

/// Opens an array or map, returning its length (`None` when indefinite).
fn open(
    d: &mut Decoder<'_>,
    definite: Type,
    indefinite: Type,
    expected: &'static str,
) -> Result<Option<u64>, DecodeError> {
    expect(d, &[definite, indefinite], expected)?;
    let p = d.position();
    let r = if definite == Type::Map {
        d.map()
    } else {
        d.array()
    };
    r.map_err(|e| from_minicbor(&e, p))
}

/// Steps through the entries of an opened array or map: `true` while one is left.
fn next_entry(d: &mut Decoder<'_>, remaining: &mut Option<u64>) -> Result<bool, DecodeError> {
    match remaining {
        Some(0) => Ok(false),
        Some(n) => {
            *n -= 1;
            Ok(true)
        }
        None => {
            if peek(d)? == Type::Break {
                skip(d)?;
                Ok(false)
            } else {
                Ok(true)
            }
        }
    }
}

/// Whether the field `_value` may be absent from its map.
fn optional<T: Wire>(_value: &T) -> bool {
    T::optional()
}

// ---------------------------------------------------------------------------------------------
// Leaves.

macro_rules! wire_unsigned {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
                e.u64(u64::from(*self))?;
                Ok(())
            }
            fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
                read_unsigned(d, stringify!($t))
            }
        }
    )*};
}
wire_unsigned!(u8, u16, u32, u64);

impl Wire for i32 {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.i32(*self)?;
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let ints = [
            Type::U8,
            Type::U16,
            Type::U32,
            Type::U64,
            Type::I8,
            Type::I16,
            Type::I32,
            Type::I64,
            Type::Int,
        ];
        expect(d, &ints, "integer")?;
        let p = d.position();
        let v = d.int().map_err(|e| from_minicbor(&e, p))?;
        i32::try_from(v)
            .map_err(|_| DecodeError::new(DecodeErrorKind::OutOfRange { expected: "i32" }, p))
    }
}

impl Wire for bool {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.bool(*self)?;
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        expect(d, &[Type::Bool], "bool")?;
        let p = d.position();
        d.bool().map_err(|e| from_minicbor(&e, p))
    }
    fn optional() -> bool {
        true
    }
    fn omitted(&self) -> bool {
        !*self
    }
}

/// Whole numbers below 2^53 are written as integers, other numbers as f32 when that is exact,
/// else as f64: the shortest exact form.
impl Wire for f64 {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        const EXACT: u64 = 1 << 53;
        // `as` saturates, and NaN becomes 0: the round trip tells whole numbers apart.
        let whole = *self as i64;
        if whole as f64 == *self && whole.unsigned_abs() < EXACT {
            e.i64(whole)?;
        } else if f64::from(*self as f32) == *self {
            e.f32(*self as f32)?;
        } else {
            e.f64(*self)?;
        }
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let p = d.position();
        let t = peek(d)?;
        let v = match t {
            Type::F32 | Type::F64 => d.f64().map_err(|e| from_minicbor(&e, p))?,
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => {
                d.u64().map_err(|e| from_minicbor(&e, p))? as f64
            }
            Type::I8 | Type::I16 | Type::I32 | Type::I64 => {
                d.i64().map_err(|e| from_minicbor(&e, p))? as f64
            }
            other => {
                return Err(DecodeError::new(
                    DecodeErrorKind::WrongType {
                        expected: "number",
                        found: type_name(other),
                    },
                    p,
                ));
            }
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(DecodeError::new(
                DecodeErrorKind::OutOfRange {
                    expected: "a finite number",
                },
                p,
            ))
        }
    }
}

impl<const N: usize> Wire for Text<N> {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.str(self.as_str())?;
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        expect(d, &[Type::String], "text string")?;
        let p = d.position();
        let s = d.str().map_err(|e| from_minicbor(&e, p))?;
        Text::new(s).map_err(|t| {
            DecodeError::new(
                DecodeErrorKind::TooLong {
                    limit: t.limit,
                    actual: t.actual,
                },
                p,
            )
        })
    }
}

/// A byte string of exactly `N` bytes.
fn fixed_bytes<const N: usize>(d: &mut Decoder<'_>) -> Result<[u8; N], DecodeError> {
    expect(d, &[Type::Bytes], "byte string")?;
    let p = d.position();
    let b = d.bytes().map_err(|e| from_minicbor(&e, p))?;
    b.try_into().map_err(|_| {
        DecodeError::new(
            DecodeErrorKind::WrongLength {
                expected: N,
                actual: b.len(),
            },
            p,
        )
    })
}

impl Wire for [u8; 16] {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.bytes(self)?;
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        fixed_bytes(d)
    }
}

impl Wire for Signature {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.bytes(&self.0)?;
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        fixed_bytes(d).map(Signature)
    }
}

/// A byte string of at most [`MAX_LOG_CHUNK`] bytes; an empty one is left out.
impl Wire for LogBytes {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.bytes(&self.0)?;
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        expect(d, &[Type::Bytes], "byte string")?;
        let p = d.position();
        let b = d.bytes().map_err(|e| from_minicbor(&e, p))?;
        heapless::Vec::from_slice(b).map(LogBytes).map_err(|_| {
            DecodeError::new(
                DecodeErrorKind::TooLong {
                    limit: MAX_LOG_CHUNK,
                    actual: b.len(),
                },
                p,
            )
        })
    }
    fn omitted(&self) -> bool {
        self.0.is_empty()
    }
    fn optional() -> bool {
        true
    }
}

impl<T: Wire> Wire for Option<T> {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        match self {
            Some(v) => v.encode(e),
            None => {
                e.null()?;
                Ok(())
            }
        }
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        if peek(d)? == Type::Null {
            skip(d)?;
            return Ok(None);
        }
        T::decode(d).map(Some)
    }
    fn omitted(&self) -> bool {
        self.is_none()
    }
    fn optional() -> bool {
        true
    }
}

impl<T: Wire, const N: usize> Wire for heapless::Vec<T, N> {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.array(self.len() as u64)?;
        for item in self {
            item.encode(e)?;
        }
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let p = d.position();
        let mut remaining = open(d, Type::Array, Type::ArrayIndef, "array")?;
        let too_long = |actual| DecodeError::new(DecodeErrorKind::TooLong { limit: N, actual }, p);
        // Refuse a declared length over the limit before reading any entry.
        if let Some(n) = remaining
            && n > N as u64
        {
            return Err(too_long(usize::try_from(n).unwrap_or(usize::MAX)));
        }
        let mut out = heapless::Vec::new();
        while next_entry(d, &mut remaining)? {
            let item = T::decode(d)?;
            out.push(item).map_err(|_| too_long(N + 1))?;
        }
        Ok(out)
    }
    fn omitted(&self) -> bool {
        self.is_empty()
    }
    fn optional() -> bool {
        true
    }
}

/// Reads a fixed-size array header of exactly `n` entries.
fn open_tuple(d: &mut Decoder<'_>, n: u64) -> Result<(), DecodeError> {
    let p = d.position();
    match open(d, Type::Array, Type::Array, "array")? {
        Some(len) if len == n => Ok(()),
        Some(len) => Err(DecodeError::new(
            DecodeErrorKind::WrongLength {
                expected: n as usize,
                actual: usize::try_from(len).unwrap_or(usize::MAX),
            },
            p,
        )),
        None => Err(DecodeError::new(DecodeErrorKind::Malformed, p)),
    }
}

/// `[name, value]`.
impl Wire for KeyValue {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.array(2)?;
        self.name.encode(e)?;
        self.value.encode(e)
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        open_tuple(d, 2)?;
        let name = Wire::decode(d).map_err(|e: DecodeError| e.in_field("name"))?;
        let value = Wire::decode(d).map_err(|e: DecodeError| e.in_field("value"))?;
        Ok(Self { name, value })
    }
}

/// `[begin, end]`.
impl Wire for PortRange {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.array(2)?.u16(self.begin)?.u16(self.end)?;
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        open_tuple(d, 2)?;
        let begin = u16::decode(d).map_err(|e| e.in_field("begin"))?;
        let end = u16::decode(d).map_err(|e| e.in_field("end"))?;
        Ok(Self { begin, end })
    }
}

// ---------------------------------------------------------------------------------------------
// Enums without data: unsigned integers.

macro_rules! wire_enum {
    ($ty:ident { $($n:literal => $variant:ident),* $(,)? }) => {
        impl Wire for $ty {
            fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
                let n: u8 = match self { $($ty::$variant => $n),* };
                e.u8(n)?;
                Ok(())
            }
            fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
                let p = d.position();
                match read_u64(d)? {
                    $($n => Ok($ty::$variant),)*
                    value => Err(DecodeError::new(DecodeErrorKind::UnknownVariant { value }, p)),
                }
            }
        }
    };
}

wire_enum!(NetworkMode { 0 => Bridge, 1 => Host, 2 => None });
wire_enum!(PortProtocol { 0 => Tcp, 1 => Udp });
wire_enum!(VolumeMode { 0 => Ro, 1 => Rw });
wire_enum!(HealthProtocol { 0 => Http, 1 => Https, 2 => Tcp, 3 => Command });
wire_enum!(RestartMode { 0 => Always, 1 => OnFailure, 2 => Never });
wire_enum!(DrainPolicy { 0 => KeepTasks, 1 => KillAll });
wire_enum!(Liveness { 0 => Online, 1 => Draining, 2 => Offline });
wire_enum!(RejectCode {
    0 => Undecodable, 1 => InvalidField, 2 => FieldTooLong, 3 => PortUnavailable,
    4 => InsufficientResources, 5 => UnknownTask, 6 => DuplicateTask, 7 => Draining,
    8 => StorageFailure, 9 => UnsupportedVersion, 10 => Unauthenticated, 11 => Replay,
    12 => StaleEpoch, 13 => Busy,
});
wire_enum!(LogStream { 0 => Stdout, 1 => Stderr });
wire_enum!(LogStreams { 0 => Both, 1 => Stdout, 2 => Stderr });
wire_enum!(Reason {
    0 => CommandExecutorFailed, 1 => ContainerLaunchFailed, 2 => ContainerLimitationMemory,
    3 => HealthCheckStatusUpdated, 4 => TaskUnhealthyCheck, 5 => Reconciliation,
    6 => TaskInvalid, 7 => TaskKilledDuringLaunch, 8 => AgentRestarted, 9 => ImagePullFailed,
    10 => ExecutorTerminated,
});

/// Task states travel as Mesos's own numbers.
impl Wire for TaskState {
    fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
        e.u8(self.mesos_number())?;
        Ok(())
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let p = d.position();
        let value = read_u64(d)?;
        u8::try_from(value)
            .ok()
            .and_then(TaskState::from_mesos_number)
            .ok_or(DecodeError::new(
                DecodeErrorKind::UnknownVariant { value },
                p,
            ))
    }
}

// ---------------------------------------------------------------------------------------------
// Enums with data: `[variant, body]`.

macro_rules! wire_union {
    ($ty:ident { $($n:literal => $variant:ident $( ($body:ident) )? as $name:literal),* $(,)? }) => {
        impl Wire for $ty {
            fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
                match self {
                    $( wire_union!(@pat $ty $variant $( $body )?) => {
                        e.array(wire_union!(@len $( $body )?))?.u8($n)?;
                        $( $body.encode(e)?; )?
                    } )*
                }
                Ok(())
            }
            fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
                let mut value = Self::default();
                value.decode_in(d)?;
                Ok(value)
            }
            fn decode_in(&mut self, d: &mut Decoder<'_>) -> Result<(), DecodeError> {
                let p = d.position();
                let len = open(d, Type::Array, Type::Array, "[variant, body] array")?;
                let variant = read_u64(d)?;
                match variant {
                    $( $n => {
                        let expected = wire_union!(@len $( $body )?);
                        if len != Some(expected) {
                            return Err(DecodeError::new(DecodeErrorKind::WrongLength {
                                expected: expected as usize,
                                actual: len.and_then(|l| usize::try_from(l).ok()).unwrap_or(usize::MAX),
                            }, p).in_field($name));
                        }
                        wire_union!(@fill self d $ty $variant $name $( $body )?);
                        Ok(())
                    } )*
                    value => Err(DecodeError::new(DecodeErrorKind::UnknownVariant { value }, p)),
                }
            }
        }
    };
    (@pat $ty:ident $variant:ident $body:ident) => { $ty::$variant($body) };
    (@pat $ty:ident $variant:ident) => { $ty::$variant };
    (@len $body:ident) => { 2u64 };
    (@len) => { 1u64 };
    // Switch to the variant (with a default body) and fill its body in place.
    (@fill $self:ident $d:ident $ty:ident $variant:ident $name:literal $body:ident) => {
        if !matches!($self, $ty::$variant(..)) {
            *$self = $ty::$variant(Default::default());
        }
        if let $ty::$variant(body) = $self {
            body.decode_in($d).map_err(|e| e.in_field($name))?;
        }
    };
    (@fill $self:ident $d:ident $ty:ident $variant:ident $name:literal) => {
        *$self = $ty::$variant;
    };
}

wire_union!(CommandKind {
    0 => Launch(body) as "launch",
    1 => Kill(body) as "kill",
    2 => Pull(body) as "pull",
    3 => Drain(body) as "drain",
    4 => Reconcile(body) as "reconcile",
    5 => ReadLogs(body) as "read_logs",
    6 => StopLogs(body) as "stop_logs",
    7 => Undrain as "undrain",
});
wire_union!(Outcome {
    0 => Accepted as "accepted",
    1 => Rejected(body) as "rejected",
});

// ---------------------------------------------------------------------------------------------
// Structs: maps with unsigned keys. The key table is the wire format; never reuse a key.

macro_rules! wire_struct {
    ($ty:ident { $($key:literal => $field:ident),* $(,)? }) => {
        impl Wire for $ty {
            fn encode<W: Write>(&self, e: &mut Encoder<W>) -> EncResult<W> {
                // Every field of the struct is in its key table: a field left out of the
                // table (which would silently never travel) is a compile error here.
                let $ty { $($field: _),* } = self;
                let present = 0u64 $( + u64::from(!self.$field.omitted()) )*;
                e.map(present)?;
                $( if !self.$field.omitted() {
                    e.u8($key)?;
                    self.$field.encode(e)?;
                } )*
                Ok(())
            }
            fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
                let mut value = Self::default();
                value.decode_in(d)?;
                Ok(value)
            }
            fn decode_in(&mut self, d: &mut Decoder<'_>) -> Result<(), DecodeError> {
                // One `seen` flag per field, named after it.
                $( let mut $field = false; )*
                let mut remaining = open(d, Type::Map, Type::MapIndef, "map")?;
                while next_entry(d, &mut remaining)? {
                    let p = d.position();
                    match read_u64(d)? {
                        $( $key => {
                            if $field {
                                return Err(DecodeError::new(DecodeErrorKind::Duplicate, p)
                                    .in_field(stringify!($field)));
                            }
                            $field = true;
                            self.$field
                                .decode_in(d)
                                .map_err(|e| e.in_field(stringify!($field)))?;
                        } )*
                        // A key from a newer peer: skip its value.
                        _ => skip(d)?,
                    }
                }
                $( if !$field && !optional(&self.$field) {
                    return Err(DecodeError::new(DecodeErrorKind::Missing, d.position())
                        .in_field(stringify!($field)));
                } )*
                Ok(())
            }
        }
    };
}

macro_rules! wire_message {
    ($($ty:ident),*) => {$(
        impl Message for $ty {
            fn version(&self) -> u16 {
                self.version
            }
        }
    )*};
}

wire_struct!(Resources { 0 => cpus, 1 => mem_mib, 2 => disk_mib, 3 => ports });
wire_struct!(PortMapping { 0 => container_port, 1 => host_port, 2 => protocol, 3 => name });
wire_struct!(Volume { 0 => host_path, 1 => container_path, 2 => mode });
wire_struct!(HealthCheck {
    0 => protocol, 1 => path, 2 => port_index, 3 => port, 4 => command, 5 => grace_period_s,
    6 => interval_s, 7 => timeout_s, 8 => max_consecutive_failures, 9 => delay_s,
});
wire_struct!(ReadinessCheck {
    0 => tls, 1 => path, 2 => port_index, 3 => interval_s, 4 => timeout_s, 5 => ready_statuses,
});
wire_struct!(RestartPolicy { 0 => mode, 1 => backoff_s, 2 => backoff_factor, 3 => max_delay_s });
wire_struct!(TaskSpec {
    0 => task_id, 1 => app_id, 2 => image, 3 => force_pull, 4 => cmd, 5 => args, 6 => env,
    7 => labels, 8 => cpus, 9 => mem_mib, 10 => disk_mib, 11 => network, 12 => port_mappings,
    13 => volumes, 14 => health_checks, 15 => kill_grace_period_s, 16 => restart,
    17 => privileged, 18 => log_max_size_mib, 19 => log_max_files, 20 => readiness,
});
wire_struct!(KillTask { 0 => task_id, 1 => grace_period_s });
wire_struct!(PullImage { 0 => image, 1 => force });
wire_struct!(Drain { 0 => policy });
wire_struct!(Reconcile { 0 => task_ids });
wire_struct!(Rejection { 0 => code, 1 => message });
wire_struct!(ReadLogs { 0 => task_id, 1 => streams, 2 => tail, 3 => since_ms, 4 => follow_s });
wire_struct!(StopLogs { 0 => request_id });
wire_struct!(AgentStats {
    0 => version, 1 => agent_id, 2 => timestamp_ms, 3 => outbox_depth, 4 => restarts,
    5 => probe_latency_us, 6 => containers, 7 => rss_kib, 8 => dockerd_reachable,
});
wire_struct!(PullProgress {
    0 => version, 1 => agent_id, 2 => image, 3 => app_id, 4 => task_id, 5 => layers_done,
    6 => layers_total, 7 => bytes_done, 8 => bytes_total, 9 => done, 10 => error,
});
wire_struct!(LogChunk {
    0 => version, 1 => agent_id, 2 => request_id, 3 => seq, 4 => stream, 5 => data, 6 => end,
});

wire_struct!(Hello {
    0 => version, 1 => agent_id, 2 => hostname, 3 => agent_version, 4 => attributes,
    5 => started_at_ms, 6 => address,
});
wire_struct!(Offer { 0 => version, 1 => agent_id, 2 => seq, 3 => available, 4 => used, 5 => attributes });
wire_struct!(Command {
    0 => version, 1 => command_id, 2 => issued_at_ms, 3 => kind, 4 => agent_id, 5 => signature,
    6 => epoch,
});
wire_struct!(CommandReply { 0 => version, 1 => command_id, 2 => outcome });
wire_struct!(TaskStatus {
    0 => version, 1 => agent_id, 2 => task_id, 3 => uuid, 4 => state, 5 => reason, 6 => message,
    7 => healthy, 8 => timestamp_ms, 9 => exit_code, 10 => host_ports, 11 => container_ip,
    12 => ready,
});
wire_struct!(StatusAck { 0 => version, 1 => task_id, 2 => uuid });
wire_struct!(AgentState { 0 => version, 1 => agent_id, 2 => liveness, 3 => started_at_ms });

wire_message!(
    Hello,
    Offer,
    Command,
    CommandReply,
    TaskStatus,
    StatusAck,
    AgentState,
    LogChunk,
    AgentStats,
    PullProgress
);
