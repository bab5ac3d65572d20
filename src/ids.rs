//! Ids that calls take side by side (a user's and one of their devices' or sessions'), as
//! types of their own, so that one cannot be passed where the other is expected. They borrow:
//! an id is named where it is read (a path, a token) and passed on without a copy.
//!
//! ```compile_fail
//! use atoms_auth::ids::{DeviceId, UserId};
//! fn forget(_user: UserId<'_>, _device: DeviceId<'_>) {}
//! let (user, device) = (UserId::new("u-1"), DeviceId::new("d-1"));
//! forget(device, user);
//! ```

use std::fmt;
use std::marker::PhantomData;

/// An id of a `K`.
pub struct Id<'a, K> {
    id: &'a str,
    kind: PhantomData<fn() -> K>,
}

/// The kinds of [`Id`].
pub mod kind {
    pub enum User {}
    pub enum Session {}
    pub enum Device {}
}

pub type UserId<'a> = Id<'a, kind::User>;
pub type SessionId<'a> = Id<'a, kind::Session>;
pub type DeviceId<'a> = Id<'a, kind::Device>;

impl<'a, K> Id<'a, K> {
    pub fn new(id: &'a str) -> Self {
        Self { id, kind: PhantomData }
    }

    pub fn as_str(self) -> &'a str {
        self.id
    }
}

impl<K> Clone for Id<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Id<'_, K> {}

impl<K> PartialEq<str> for Id<'_, K> {
    fn eq(&self, other: &str) -> bool {
        self.id == other
    }
}

impl<K> fmt::Debug for Id<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.id, f)
    }
}

impl<K> fmt::Display for Id<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id)
    }
}
