//! The one error type of ferrograd: every fallible public function returns `Result<T, Error>`.

use std::fmt;

/// What went wrong, for callers that want to branch on it; the message says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Shapes that do not fit the op.
    Shape,
    /// A dtype the op does not take.
    DType,
    /// An index or dimension out of range.
    Index,
    /// A value outside what the op accepts (a negative size, an empty tensor, ...).
    Value,
    /// Misuse of the autodiff machinery (backward twice, on a non-scalar, ...).
    Autograd,
    /// Reading or writing files.
    Io,
}

/// An error naming the op, what was given and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub op: String,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, op: impl Into<String>, message: impl Into<String>) -> Self {
        Error { kind, op: op.into(), message: message.into() }
    }
    pub fn shape(op: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Shape, op, message)
    }
    pub fn dtype(op: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DType, op, message)
    }
    pub fn index(op: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Index, op, message)
    }
    pub fn value(op: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Value, op, message)
    }
    pub fn autograd(op: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Autograd, op, message)
    }
    pub fn io(op: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, op, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.message)
    }
}

impl std::error::Error for Error {}
