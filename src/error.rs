//! The domain error and the one table that maps each kind to the GraphQL `extensions.code`, the
//! Nakama gRPC code and the HTTP status. Internal details are logged here, once, and never returned.

use chrono::{DateTime, Utc};
use sea_orm::{DbErr, RuntimeErr};

use crate::domain::validate::{self, TimestampValue};
use serde::Serialize;

/// One rule broken by one input, e.g. `{index: 3, field: "eventName", reason: "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Position of the offending item in a batch; absent for single inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            index: None,
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    BadUserInput {
        message: String,
        errors: Vec<FieldError>,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A write whose `expectedVersion` no longer matches what is stored.
    #[error("{0}")]
    Conflict(String),
    /// A per-connection or per-subscriber limit was reached (too many subscriptions, a reader
    /// too slow to keep up).
    #[error("{0}")]
    LimitExceeded(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the database is unavailable; try again shortly")]
    ServiceUnavailable,
    #[error(
        "the request did not finish within {seconds} s; retrying is safe for reads and event batches"
    )]
    Timeout { seconds: u64 },
    #[error("internal error")]
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadUserInput,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    PayloadTooLarge,
    LimitExceeded,
    ServiceUnavailable,
    RequestTimeout,
    InternalServerError,
}

impl ErrorCode {
    /// The GraphQL `extensions.code`.
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The gRPC status code Nakama reports for this kind of error.
    pub fn grpc_code(self) -> u16 {
        self.row().1
    }

    pub fn http_status(self) -> u16 {
        self.row().2
    }

    fn row(self) -> (&'static str, u16, u16) {
        match self {
            ErrorCode::BadUserInput => ("BAD_USER_INPUT", 3, 400),
            ErrorCode::Unauthenticated => ("UNAUTHENTICATED", 16, 401),
            ErrorCode::Forbidden => ("FORBIDDEN", 7, 403),
            ErrorCode::NotFound => ("NOT_FOUND", 5, 404),
            ErrorCode::Conflict => ("CONFLICT", 10, 409),
            ErrorCode::PayloadTooLarge => ("PAYLOAD_TOO_LARGE", 3, 413),
            ErrorCode::LimitExceeded => ("LIMIT_EXCEEDED", 8, 429),
            ErrorCode::ServiceUnavailable => ("SERVICE_UNAVAILABLE", 14, 503),
            // Nakama would say 504 for DEADLINE_EXCEEDED; 408 tells clients the request, not an
            // upstream, ran out of time, on both transports alike.
            ErrorCode::RequestTimeout => ("REQUEST_TIMEOUT", 4, 408),
            ErrorCode::InternalServerError => ("INTERNAL_SERVER_ERROR", 13, 500),
        }
    }
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::BadUserInput { .. } => ErrorCode::BadUserInput,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::LimitExceeded(_) => ErrorCode::LimitExceeded,
            Error::ServiceUnavailable => ErrorCode::ServiceUnavailable,
            Error::Timeout { .. } => ErrorCode::RequestTimeout,
            Error::Internal => ErrorCode::InternalServerError,
        }
    }

    /// A single-field validation error.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError::new(field, reason).into()
    }

    /// Validation errors with a message naming the first, for clients that read only `message`.
    /// Callers must pass at least one error.
    pub fn bad_input(errors: Vec<FieldError>) -> Self {
        let message = match errors.first() {
            Some(first) => format!("invalid {}: {}", first.field, first.reason),
            None => "invalid input".to_owned(),
        };
        Error::BadUserInput { message, errors }
    }

    /// The same error with fields renamed as a transport spells them (the RPC calls GraphQL's
    /// `first` and `after` `limit` and `cursor`).
    pub fn renaming_fields(self, names: &[(&str, &str)]) -> Self {
        match self {
            Error::BadUserInput { errors, .. } => Error::bad_input(
                errors
                    .into_iter()
                    .map(|mut error| {
                        if let Some((_, to)) = names.iter().find(|(from, _)| *from == error.field) {
                            error.field = (*to).to_owned();
                        }
                        error
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// Field errors of a batch, in input order.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Error::BadUserInput { errors, .. } => errors,
            _ => &[],
        }
    }
}

impl From<FieldError> for Error {
    fn from(error: FieldError) -> Self {
        Error::bad_input(vec![error])
    }
}

/// Collects every broken rule of one input, so a single reply can name them all.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl From<Vec<FieldError>> for FieldErrors {
    fn from(errors: Vec<FieldError>) -> Self {
        FieldErrors(errors)
    }
}

impl FieldErrors {
    /// The value of a passed check; a failed one is recorded under `field` and gives `None`.
    pub fn check<T>(&mut self, field: &str, outcome: Result<T, String>) -> Option<T> {
        outcome
            .map_err(|reason| self.0.push(FieldError::new(field, reason)))
            .ok()
    }

    /// The value of a passed check; a failed one is recorded and gives `None`.
    pub fn take<T>(&mut self, outcome: Result<T, FieldError>) -> Option<T> {
        outcome.map_err(|error| self.0.push(error)).ok()
    }

    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Records every problem another check found.
    pub fn extend(&mut self, errors: Vec<FieldError>) {
        self.0.extend(errors);
    }

    /// Two optional instants bounding a range (`(field, value)` each): both parsed, and the end
    /// later than the start; problems are recorded under the fields' names.
    pub fn time_range(
        &mut self,
        start: (&str, Option<&TimestampValue>),
        end: (&str, Option<&TimestampValue>),
    ) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        let from = self
            .check(start.0, validate::optional_timestamp(start.1))
            .flatten();
        let to = self
            .check(end.0, validate::optional_timestamp(end.1))
            .flatten();
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            self.push(FieldError::new(
                end.0,
                format!("must be later than {}", start.0),
            ));
        }
        (from, to)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a problem is already recorded for `field`.
    pub fn names(&self, field: &str) -> bool {
        self.0.iter().any(|error| error.field == field)
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// Two values parsed independently: both, or `BAD_USER_INPUT` naming every failure.
    pub fn both<A, B>(
        first: Result<A, FieldError>,
        second: Result<B, FieldError>,
    ) -> Result<(A, B)> {
        match (first, second) {
            (Ok(first), Ok(second)) => Ok((first, second)),
            (first, second) => {
                let errors = [first.err(), second.err()].into_iter().flatten().collect();
                Err(Error::bad_input(errors))
            }
        }
    }

    /// `Ok` when nothing was recorded, else `BAD_USER_INPUT` listing every problem.
    pub fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::bad_input(self.0))
        }
    }
}

impl From<DbErr> for Error {
    fn from(error: DbErr) -> Self {
        Error::from(&error)
    }
}

/// A database error several requests share (one failed group write answers all its waiters).
impl From<&DbErr> for Error {
    fn from(error: &DbErr) -> Self {
        if is_unavailable(error) {
            tracing::warn!(error = %error, "database unavailable");
            Error::ServiceUnavailable
        } else {
            tracing::error!(error = %error, "database error");
            Error::Internal
        }
    }
}

/// True when the database could not be reached (as opposed to rejecting a statement).
pub fn is_unavailable(error: &DbErr) -> bool {
    use sea_orm::sqlx::Error as SqlxError;
    let runtime = match error {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => runtime,
        _ => return false,
    };
    match runtime {
        RuntimeErr::SqlxError(sqlx) => match sqlx.as_ref() {
            SqlxError::Io(_)
            | SqlxError::PoolTimedOut
            | SqlxError::PoolClosed
            | SqlxError::Tls(_) => true,
            // SQLSTATE class 08 (connection exception) and 57P (server shutting down or starting).
            SqlxError::Database(database) => database
                .code()
                .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
            _ => false,
        },
        _ => matches!(error, DbErr::Conn(_)),
    }
}

/// Caches share one loader error among every waiter; rebuild an owned error from it.
pub fn unwrap_shared(error: std::sync::Arc<Error>) -> Error {
    match error.as_ref() {
        Error::BadUserInput { message, errors } => Error::BadUserInput {
            message: message.clone(),
            errors: errors.clone(),
        },
        Error::Unauthenticated(message) => Error::Unauthenticated(message.clone()),
        Error::Forbidden(message) => Error::Forbidden(message.clone()),
        Error::NotFound(message) => Error::NotFound(message.clone()),
        Error::Conflict(message) => Error::Conflict(message.clone()),
        Error::PayloadTooLarge { limit } => Error::PayloadTooLarge { limit: *limit },
        Error::LimitExceeded(message) => Error::LimitExceeded(message.clone()),
        Error::ServiceUnavailable => Error::ServiceUnavailable,
        Error::Timeout { seconds } => Error::Timeout { seconds: *seconds },
        Error::Internal => Error::Internal,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
