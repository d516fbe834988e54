//! Keys and roles, shared by both adapters and the domain. Keys are compared through fixed-length
//! digests in constant time, so neither their content nor their length leaks through timing.

use subtle::ConstantTimeEq;

use crate::{
    config::KeyConfig,
    error::{Error, Result},
};

/// What the caller's key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The http key: game clients and services.
    Client,
    /// The admin key: everything, including config and experiment changes.
    Admin,
}

impl Role {
    /// The one admin rule: services call it before any admin-only work, so no adapter can
    /// forget it or word it differently.
    pub fn require_admin(self) -> Result<()> {
        match self {
            Role::Admin => Ok(()),
            Role::Client => Err(Error::Forbidden(
                "this operation needs the admin key".to_owned(),
            )),
        }
    }

    /// Who made a change, as history records it: the key's name (`admin` for the admin key).
    pub fn actor(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Client => "http",
        }
    }
}

pub struct Keys {
    http: blake3::Hash,
    admin: blake3::Hash,
}

impl Keys {
    pub fn new(config: &KeyConfig) -> Self {
        Keys {
            http: blake3::hash(config.http_key.as_bytes()),
            admin: blake3::hash(config.admin_key.as_bytes()),
        }
    }

    /// The role a presented key grants, if any.
    pub fn role(&self, presented: &str) -> Option<Role> {
        let digest = blake3::hash(presented.as_bytes());
        let is_admin: bool = digest.as_bytes().ct_eq(self.admin.as_bytes()).into();
        let is_http: bool = digest.as_bytes().ct_eq(self.http.as_bytes()).into();
        if is_admin {
            Some(Role::Admin)
        } else if is_http {
            Some(Role::Client)
        } else {
            None
        }
    }
}

/// The first `http_key` value of a query string, percent-decoded; an empty value counts as absent.
pub fn query_key(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "http_key")
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}
