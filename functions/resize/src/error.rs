//! Typed errors with stable codes: the code is part of the public API, the message is for humans.

use std::fmt;

/// Stable machine-readable error codes. Never rename one: clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidParameter,
    EmptyBody,
    InputTooLarge,
    UnsupportedFormat,
    CorruptImage,
    TooManyPixels,
    OutputTooLarge,
    MemoryLimitExceeded,
    MethodNotAllowed,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidParameter => "invalid_parameter",
            Self::EmptyBody => "empty_body",
            Self::InputTooLarge => "input_too_large",
            Self::UnsupportedFormat => "unsupported_format",
            Self::CorruptImage => "corrupt_image",
            Self::TooManyPixels => "too_many_pixels",
            Self::OutputTooLarge => "output_too_large",
            Self::MemoryLimitExceeded => "memory_limit_exceeded",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Internal => "internal",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::InvalidParameter | Self::EmptyBody => 400,
            Self::MethodNotAllowed => 405,
            Self::InputTooLarge => 413,
            Self::UnsupportedFormat => 415,
            Self::CorruptImage
            | Self::TooManyPixels
            | Self::OutputTooLarge
            | Self::MemoryLimitExceeded => 422,
            // Resampling or encoding a decoded bitmap cannot fail on user input; if it does
            // it is our bug, and saying so is more honest than blaming the request.
            Self::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizeError {
    pub code: ErrorCode,
    pub message: String,
}

impl ResizeError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(param: &str, why: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidParameter, format!("{param}: {why}"))
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON body every imgfleet error uses: `{"error":{"code":..,"message":..}}`.
    pub fn to_json(&self) -> Vec<u8> {
        error_json(self.code.as_str(), &self.message)
    }
}

impl fmt::Display for ResizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ResizeError {}

/// Serialises the shared error envelope; used by every adapter so the shape cannot drift.
pub fn error_json(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": { "code": code, "message": message } }))
        .expect("a JSON object of two strings always serialises")
}
