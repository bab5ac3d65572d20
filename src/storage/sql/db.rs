//! What the shared SQL needs of a sqlx database, said once.
//!
//! Generic code over a sqlx `Database` must prove, at every use, that each value it binds
//! encodes and each row it reads decodes, and Rust carries such facts from a trait's
//! declaration to its users only when they are bounds on the type itself (supertraits). So
//! [`SqlDb`] lists them as supertraits: [`Binds`] for each type a statement binds and
//! [`Reads`] for each type a row is read as. `D: Dialect` alone then brings every one of them
//! into scope, and the shared code binds with [`Statement::arg`] and reads with
//! [`Statement::one`], [`Statement::optional`] and [`Statement::all`].
//!
//! A statement that binds or reads a new type adds it to the list; the compiler then checks
//! that both databases support it.

use std::future::Future;
use std::pin::Pin;

use sqlx::migrate::Migrate;
use sqlx::query::Query;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Type};

use super::super::{
    AuditRecord, AuthorizationCode, BrowserSession, Client, Device, Resource, ServerSecret,
    Session, StorageError, StorageResult, StoredKey, User, WebhookAttempt, WebhookDelivery,
    WebhookSubscription,
};
use crate::clock::Millis;

/// A statement of the database `DB` with its arguments.
pub type Sql<'q, DB> = Query<'q, DB, <DB as Database>::Arguments>;

/// `DB` can bind a `T` to a statement (`'t`: how long the value's borrows last).
pub trait Binds<'t, T>: Database {
    fn bind<'q>(statement: Sql<'q, Self>, value: T) -> Sql<'q, Self>;
    fn push_bind(builder: &mut QueryBuilder<Self>, value: T);
}

impl<'t, DB: Database, T> Binds<'t, T> for DB
where
    T: Encode<'t, DB> + Type<DB>,
{
    fn bind<'q>(statement: Sql<'q, Self>, value: T) -> Sql<'q, Self> {
        statement.bind(value)
    }

    fn push_bind(builder: &mut QueryBuilder<Self>, value: T) {
        builder.push_bind(value);
    }
}

/// `DB` can read a row as a `T`.
pub trait Reads<T>: Database {
    fn read(row: &Self::Row) -> Result<T, sqlx::Error>;
}

impl<DB: Database, T> Reads<T> for DB
where
    T: for<'r> FromRow<'r, DB::Row>,
{
    fn read(row: &Self::Row) -> Result<T, sqlx::Error> {
        T::from_row(row)
    }
}

/// A sqlx database the shared SQL runs on: every value it binds, every row it reads.
pub trait SqlDb:
    Database<Arguments: IntoArguments<Self>, Connection: Migrate>
    + for<'a> Binds<'a, &'a str>
    + for<'a> Binds<'a, Option<&'a str>>
    + for<'a> Binds<'a, &'a String>
    + for<'a> Binds<'a, &'a Option<String>>
    + for<'a> Binds<'a, &'a [u8]>
    + for<'a> Binds<'a, &'a Vec<u8>>
    + for<'a> Binds<'a, String>
    + for<'a> Binds<'a, Millis>
    + for<'a> Binds<'a, Option<Millis>>
    + for<'a> Binds<'a, i32>
    + for<'a> Binds<'a, Option<i32>>
    + for<'a> Binds<'a, bool>
    + for<'a> Binds<'a, Option<bool>>
    + Reads<User>
    + Reads<Client>
    + Reads<StoredKey>
    + Reads<ServerSecret>
    + Reads<crate::storage::sql::sessions::FamilyRow>
    + Reads<Session>
    + Reads<Device>
    + Reads<AuditRecord>
    + Reads<WebhookSubscription>
    + Reads<WebhookDelivery>
    + Reads<WebhookAttempt>
    + Reads<BrowserSession>
    + Reads<Resource>
    + Reads<AuthorizationCode>
    + Reads<(Option<String>,)>
    + Reads<(String,)>
    + Reads<(bool,)>
    + Reads<(Millis,)>
    + Reads<(Millis, Millis)>
    + Reads<(i32, Option<Millis>)>
    + Reads<super::revocations::TokenStateRow>
    + Reads<super::sessions::SessionRow>
    + Reads<super::sessions::SessionByToken>
{
    /// A pool as the executor it is (which the compiler sees only for a concrete database).
    fn pool(pool: &Pool<Self>) -> impl Executor<'_, Database = Self>;
    /// A connection, or an open transaction, as an executor.
    fn connection(connection: &mut Self::Connection) -> impl Executor<'_, Database = Self>;
    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl SqlDb for sqlx::Sqlite {
    fn pool(pool: &Pool<Self>) -> impl Executor<'_, Database = Self> {
        pool
    }

    fn connection(connection: &mut Self::Connection) -> impl Executor<'_, Database = Self> {
        connection
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl SqlDb for sqlx::Postgres {
    fn pool(pool: &Pool<Self>) -> impl Executor<'_, Database = Self> {
        pool
    }

    fn connection(connection: &mut Self::Connection) -> impl Executor<'_, Database = Self> {
        connection
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Where a statement runs: a pool, or an open transaction.
pub trait Target<'c, DB: SqlDb>: Send {
    fn executor(self) -> impl Executor<'c, Database = DB>;
}

impl<'c, DB: SqlDb> Target<'c, DB> for &'c Pool<DB> {
    fn executor(self) -> impl Executor<'c, Database = DB> {
        DB::pool(self)
    }
}

impl<'c, DB: SqlDb> Target<'c, DB> for &'c mut sqlx::Transaction<'static, DB> {
    fn executor(self) -> impl Executor<'c, Database = DB> {
        DB::connection(self)
    }
}

/// A statement's answer to come. Boxed: a future whose type names the generic executor would
/// have to be proved `Send` for every lifetime, which the compiler cannot yet do inside the
/// storage traits' methods.
pub type Answer<'c, T> = Pin<Box<dyn Future<Output = StorageResult<T>> + Send + 'c>>;

/// Binding and running a statement of any [`SqlDb`].
pub trait Statement<'q, DB: SqlDb>: Sized + Send {
    /// Binds the next parameter.
    fn arg<'t, T>(self, value: T) -> Self
    where
        DB: Binds<'t, T>;
    /// Runs the statement; returns how many rows it changed.
    fn run<'c>(self, on: impl Target<'c, DB> + 'c) -> Answer<'c, u64>
    where
        'q: 'c;
    /// The one row the statement returns.
    fn one<'c, T: Send + 'c>(self, on: impl Target<'c, DB> + 'c) -> Answer<'c, T>
    where
        'q: 'c,
        DB: Reads<T>;
    /// The row the statement returns, if any.
    fn optional<'c, T: Send + 'c>(self, on: impl Target<'c, DB> + 'c) -> Answer<'c, Option<T>>
    where
        'q: 'c,
        DB: Reads<T>;
    /// Every row the statement returns.
    fn all<'c, T: Send + 'c>(self, on: impl Target<'c, DB> + 'c) -> Answer<'c, Vec<T>>
    where
        'q: 'c,
        DB: Reads<T>;
}

impl<'q, DB: SqlDb> Statement<'q, DB> for Sql<'q, DB> {
    fn arg<'t, T>(self, value: T) -> Self
    where
        DB: Binds<'t, T>,
    {
        DB::bind(self, value)
    }

    fn run<'c>(self, on: impl Target<'c, DB> + 'c) -> Answer<'c, u64>
    where
        'q: 'c,
    {
        Box::pin(async move {
            let done = self.execute(on.executor()).await?;
            Ok(DB::rows_affected(&done))
        })
    }

    fn one<'c, T: Send + 'c>(self, on: impl Target<'c, DB> + 'c) -> Answer<'c, T>
    where
        'q: 'c,
        DB: Reads<T>,
    {
        Box::pin(async move {
            let row = self.fetch_one(on.executor()).await?;
            Ok(DB::read(&row)?)
        })
    }

    fn optional<'c, T: Send + 'c>(self, on: impl Target<'c, DB> + 'c) -> Answer<'c, Option<T>>
    where
        'q: 'c,
        DB: Reads<T>,
    {
        Box::pin(async move {
            let row = self.fetch_optional(on.executor()).await?;
            Ok(row.as_ref().map(DB::read).transpose()?)
        })
    }

    fn all<'c, T: Send + 'c>(self, on: impl Target<'c, DB> + 'c) -> Answer<'c, Vec<T>>
    where
        'q: 'c,
        DB: Reads<T>,
    {
        Box::pin(async move {
            let rows = self.fetch_all(on.executor()).await?;
            Ok(rows.iter().map(DB::read).collect::<Result<_, _>>()?)
        })
    }
}

/// Binding into a [`QueryBuilder`] of any [`SqlDb`].
pub trait Builder<DB: SqlDb> {
    /// Appends a parameter for `value`.
    fn push_arg<'t, T>(&mut self, value: T) -> &mut Self
    where
        DB: Binds<'t, T>;
}

impl<DB: SqlDb> Builder<DB> for QueryBuilder<DB> {
    fn push_arg<'t, T>(&mut self, value: T) -> &mut Self
    where
        DB: Binds<'t, T>,
    {
        DB::push_bind(self, value);
        self
    }
}

/// Maps a unique-constraint violation to [`StorageError::Conflict`]: the one place it is done.
pub fn unique(what: &'static str) -> impl FnOnce(StorageError) -> StorageError {
    move |e| match &e {
        StorageError::Sql(sql) => match sql.as_database_error() {
            Some(db) if db.is_unique_violation() => StorageError::Conflict(what),
            _ => e,
        },
        _ => e,
    }
}
