//! The snapshotter's errors and their gRPC codes.

use crate::devices::{DevError, DevErrorKind};

/// The gRPC code class of an error (containerd turns these into its errdefs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `NotFound`.
    NotFound,
    /// `AlreadyExists`.
    AlreadyExists,
    /// `FailedPrecondition`.
    FailedPrecondition,
    /// `InvalidArgument`.
    InvalidArgument,
    /// `Unavailable`: another call is changing the same snapshot.
    Unavailable,
    /// `ResourceExhausted`: the pool is full.
    ResourceExhausted,
    /// `Internal`.
    Internal,
}

/// An error of a snapshotter call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Its gRPC code.
    pub code: Code,
    /// The message for the caller.
    pub msg: String,
}

impl Error {
    /// An error with `code`.
    pub fn new(code: Code, msg: impl Into<String>) -> Error {
        Error {
            code,
            msg: msg.into(),
        }
    }

    /// `snapshot KEY does not exist`.
    pub fn not_found(key: &str) -> Error {
        Error::new(Code::NotFound, format!("snapshot {key:?} does not exist"))
    }

    /// An internal error.
    pub fn internal(msg: impl Into<String>) -> Error {
        Error::new(Code::Internal, msg)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<DevError> for Error {
    fn from(e: DevError) -> Error {
        let code = match e.kind {
            DevErrorKind::NotFound => Code::NotFound,
            DevErrorKind::Exists => Code::AlreadyExists,
            DevErrorKind::Busy => Code::FailedPrecondition,
            DevErrorKind::NoSpace => Code::ResourceExhausted,
            DevErrorKind::Other => Code::Internal,
        };
        Error::new(code, format!("device set: {}", e.msg))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::internal(format!("snapshot metadata: {e}"))
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        let code = match e.code {
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::FailedPrecondition => tonic::Code::FailedPrecondition,
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::Internal => tonic::Code::Internal,
        };
        tonic::Status::new(code, e.msg)
    }
}

/// Result of a snapshotter call.
pub type Result<T> = std::result::Result<T, Error>;
