//! The store's error type. Every message says what the store was doing, for which calendar,
//! conference, outbox row or meeting, so it can be logged as is.

use sqlx::error::ErrorKind;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or configured.
    #[error("cannot open the store at {location}: {source} (check that the path is writable)")]
    Open {
        /// The path or URL given to [`Store::open`](crate::Store::open).
        location: String,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
    /// Another process holds the store ([`Store::claim_single_process`](crate::Store::claim_single_process)).
    #[error("cannot use the store at {location}: {detail}")]
    Locked {
        /// The path or URL given to [`Store::open`](crate::Store::open).
        location: String,
        /// Why.
        detail: String,
    },
    /// The schema migrations could not be applied.
    #[error(
        "cannot migrate the store at {location}: {source} (a database written by a newer or \
         modified confsync cannot be opened by this one)"
    )]
    Migrate {
        /// The path or URL given to [`Store::open`](crate::Store::open).
        location: String,
        /// The underlying error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A statement broke a constraint (a second live link for one event, a meeting id already
    /// taken, a row referring to a conference that has no link, ...). Nothing was written.
    #[error("{what}: {detail}")]
    Conflict {
        /// What the store was doing.
        what: String,
        /// The database's message.
        detail: String,
    },
    /// A conditional write found the row changed since the writer read it (a link written by a
    /// concurrent sync or executor step). Nothing was written: read again and re-plan.
    #[error("{what}: {detail}")]
    Stale {
        /// What the store was doing.
        what: String,
        /// What changed.
        detail: String,
    },
    /// The row the operation needs does not exist.
    #[error("{what}: not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A stored JSON column does not parse as the type it should hold.
    #[error(
        "{what}: the stored JSON does not parse ({source}); the row was written by an \
         incompatible confsync or edited by hand"
    )]
    Corrupt {
        /// Which row and column.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// Any other database failure (I/O, lock timeout, closed pool, ...).
    #[error("{what}: {source}")]
    Database {
        /// What the store was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    pub(crate) fn from_sqlx(what: String, source: sqlx::Error) -> StoreError {
        // A conditional write sent with a later statement (SQLite: `links::write`) that found
        // its condition gone: the transaction's `write_guard` check aborted it.
        if let sqlx::Error::Database(db) = &source
            && db.message() == STALE_WRITE
        {
            return StoreError::Stale {
                what,
                detail: "a link changed since it was read (or the conference has a link already)"
                    .to_owned(),
            };
        }
        if let sqlx::Error::Database(db) = &source
            && matches!(
                db.kind(),
                ErrorKind::UniqueViolation
                    | ErrorKind::ForeignKeyViolation
                    | ErrorKind::NotNullViolation
                    | ErrorKind::CheckViolation
            )
        {
            return StoreError::Conflict {
                what,
                detail: db.message().to_owned(),
            };
        }
        StoreError::Database { what, source }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> StoreError {
        StoreError::NotFound { what: what.into() }
    }

    /// True for [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// True for [`StoreError::Stale`]: re-read and re-plan, then write again.
    pub fn is_stale(&self) -> bool {
        matches!(self, StoreError::Stale { .. })
    }

    /// True for [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// The message of SQLite's `write_guard` check (migration 0017): a guarded write found its
/// condition gone.
pub(crate) const STALE_WRITE: &str = "confsync: stale write";

/// Attaches "what the store was doing" to database and JSON errors.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::from_sqlx(what(), source))
    }
}

impl<T> Context<T> for Result<T, serde_json::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Corrupt {
            what: what(),
            source,
        })
    }
}
