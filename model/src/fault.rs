//! XML-RPC fault codes. They are part of the public API (docs/api.md): never renumber one.

/// A stable fault code carried in every XML-RPC fault `apid` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum FaultCode {
    /// The request body is not well-formed XML-RPC (or uses DOCTYPE/entities, or is too deep).
    Parse = 100,
    /// No method of that name.
    UnknownMethod = 101,
    /// Wrong number or types of parameters.
    BadParams = 102,
    /// Missing or wrong API token.
    Unauthorized = 103,
    /// The named object does not exist.
    NotFound = 104,
    /// The object exists already, or its state forbids the request.
    Conflict = 105,
    /// A daemon is busy or not running; retry later.
    Busy = 106,
    /// A bug or an unexpected failure on the host; the message says what failed.
    Internal = 107,
    /// The request body, or what the method would answer, is larger than its cap.
    TooLarge = 108,
}

impl FaultCode {
    pub const ALL: [FaultCode; 9] = [
        FaultCode::Parse,
        FaultCode::UnknownMethod,
        FaultCode::BadParams,
        FaultCode::Unauthorized,
        FaultCode::NotFound,
        FaultCode::Conflict,
        FaultCode::Busy,
        FaultCode::Internal,
        FaultCode::TooLarge,
    ];

    pub fn code(self) -> i32 {
        self as i32
    }

    /// The short name used in docs/api.md and in `cairnctl` output.
    pub fn name(self) -> &'static str {
        match self {
            FaultCode::Parse => "parse_error",
            FaultCode::UnknownMethod => "unknown_method",
            FaultCode::BadParams => "bad_params",
            FaultCode::Unauthorized => "unauthorized",
            FaultCode::NotFound => "not_found",
            FaultCode::Conflict => "conflict",
            FaultCode::Busy => "busy",
            FaultCode::Internal => "internal",
            FaultCode::TooLarge => "too_large",
        }
    }

    pub fn from_code(code: i32) -> Option<FaultCode> {
        FaultCode::ALL.into_iter().find(|f| f.code() == code)
    }
}
