//! Keys and roles, shared by both adapters and the domain. Keys are compared through fixed-length
//! digests in constant time, so neither their content nor their length leaks through timing.

use subtle::ConstantTimeEq;

use crate::{
    config::KeyConfig,
    error::{Error, Result},
};

/// A key's name, as history and the audit log record it (`--admin-key name:secret`). Names are
/// read once at startup and live as long as the process, which keeps [`Role`] `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyName(&'static str);

impl KeyName {
    /// The name of an admin key given without one.
    pub const ADMIN: KeyName = KeyName("admin");
    /// The name of an http key given without one.
    pub const HTTP: KeyName = KeyName("http");

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// What the caller's key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An http key: game clients and services.
    Client,
    /// An admin key: everything, including config and experiment changes.
    Admin(KeyName),
}

impl Role {
    /// The one admin rule: services call it before any admin-only work, so no adapter can
    /// forget it or word it differently.
    pub fn require_admin(self) -> Result<()> {
        match self {
            Role::Admin(_) => Ok(()),
            Role::Client => Err(Error::Forbidden(
                "this operation needs the admin key".to_owned(),
            )),
        }
    }

    /// Who made a change, as history records it: the admin key's name (`http` for a client,
    /// which can change nothing that is recorded).
    pub fn actor(self) -> &'static str {
        match self {
            Role::Admin(name) => name.as_str(),
            Role::Client => KeyName::HTTP.as_str(),
        }
    }
}

/// Every accepted key, as digests: listing an old and a new key together rotates without downtime.
pub struct Keys {
    http: Vec<blake3::Hash>,
    admin: Vec<(KeyName, blake3::Hash)>,
}

impl Keys {
    /// The keys of the configuration; an error names the flag and what is wrong with it.
    pub fn new(config: &KeyConfig) -> std::result::Result<Self, String> {
        let http = parse_key_list(
            "--http-key (OCTP_HTTP_KEY)",
            &config.http_key,
            KeyName::HTTP,
        )?;
        let admin = parse_key_list(
            "--admin-key (OCTP_ADMIN_KEY)",
            &config.admin_key,
            KeyName::ADMIN,
        )?;
        Ok(Keys {
            http: http.into_iter().map(|(_, digest)| digest).collect(),
            admin,
        })
    }

    /// The role a presented key grants, if any. Every listed key is compared, whatever matches.
    pub fn role(&self, presented: &str) -> Option<Role> {
        let digest = blake3::hash(presented.as_bytes());
        let matches = |candidate: &blake3::Hash| -> bool {
            digest.as_bytes().ct_eq(candidate.as_bytes()).into()
        };
        let mut admin = None;
        for (name, candidate) in &self.admin {
            if matches(candidate) {
                admin = Some(*name);
            }
        }
        let is_http = self
            .http
            .iter()
            .fold(false, |found, key| found | matches(key));
        match admin {
            Some(name) => Some(Role::Admin(name)),
            None if is_http => Some(Role::Client),
            None => None,
        }
    }
}

/// Longest key name.
const MAX_KEY_NAME_CHARS: usize = 64;

/// `name:secret` or bare secrets, comma-separated. A bare secret is named `bare_name`.
fn parse_key_list(
    flag: &str,
    list: &str,
    bare_name: KeyName,
) -> std::result::Result<Vec<(KeyName, blake3::Hash)>, String> {
    let mut keys: Vec<(KeyName, blake3::Hash)> = Vec::new();
    for (position, entry) in list.split(',').map(str::trim).enumerate() {
        let entry_number = position + 1;
        let (name, secret) = match entry.split_once(':') {
            Some((name, secret)) => (name, secret),
            None => (bare_name.as_str(), entry),
        };
        if !valid_key_name(name) {
            return Err(format!(
                "{flag}: key {entry_number} has the name {name:?}; a name is 1 to \
                 {MAX_KEY_NAME_CHARS} of A-Z a-z 0-9 _ . - (a secret holding ':' needs a name: name:secret)"
            ));
        }
        if secret.is_empty() {
            return Err(format!("{flag}: key {entry_number} ({name}) has no secret"));
        }
        if keys.iter().any(|(known, _)| known.as_str() == name) {
            return Err(format!(
                "{flag}: the name {name:?} is given to more than one key; name each key apart"
            ));
        }
        // Names live as long as the process (read once at startup), so they can be shared as
        // `&'static str` by every request without reference counting.
        let name = KeyName(Box::leak(name.to_owned().into_boxed_str()));
        keys.push((name, blake3::hash(secret.as_bytes())));
    }
    Ok(keys)
}

fn valid_key_name(name: &str) -> bool {
    (1..=MAX_KEY_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

/// Whether a listed secret is `default` (a public key anyone can use).
pub fn lists_secret(list: &str, default: &str) -> bool {
    list.split(',').map(str::trim).any(|entry| {
        entry == default
            || entry
                .split_once(':')
                .is_some_and(|(_, secret)| secret == default)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(http: &str, admin: &str) -> std::result::Result<Keys, String> {
        Keys::new(&KeyConfig {
            http_key: http.to_owned(),
            admin_key: admin.to_owned(),
        })
    }

    #[test]
    fn every_listed_key_works_and_admin_keys_carry_their_names() {
        let keys = keys("game:h1, h2", "alice:a1,bob:a2,a3").unwrap();
        assert_eq!(keys.role("h1"), Some(Role::Client));
        assert_eq!(keys.role("h2"), Some(Role::Client));
        let name = |secret| match keys.role(secret) {
            Some(Role::Admin(name)) => Some(name.as_str()),
            _ => None,
        };
        assert_eq!(name("a1"), Some("alice"));
        assert_eq!(name("a2"), Some("bob"));
        assert_eq!(name("a3"), Some("admin"));
        assert_eq!(
            keys.role("alice:a1"),
            None,
            "the name is not part of the secret"
        );
        assert_eq!(keys.role("game"), None);
        assert_eq!(keys.role(""), None);
    }

    #[test]
    fn bad_key_lists_are_refused_naming_the_flag_and_the_problem() {
        for (http, admin, expected) in [
            (
                "h",
                "",
                "--admin-key (OCTP_ADMIN_KEY): key 1 (admin) has no secret",
            ),
            (
                "h,",
                "a",
                "--http-key (OCTP_HTTP_KEY): key 2 (http) has no secret",
            ),
            (
                "h",
                "bad name:s",
                "--admin-key (OCTP_ADMIN_KEY): key 1 has the name \"bad name\"",
            ),
            (
                "h",
                ":s",
                "--admin-key (OCTP_ADMIN_KEY): key 1 has the name \"\"",
            ),
            (
                "h",
                &format!("{}:s", "n".repeat(65)),
                "--admin-key (OCTP_ADMIN_KEY): key 1 has the name",
            ),
            (
                "h",
                "a,b",
                "--admin-key (OCTP_ADMIN_KEY): the name \"admin\" is given to more than one key",
            ),
            (
                "x:1,x:2",
                "a",
                "--http-key (OCTP_HTTP_KEY): the name \"x\" is given to more than one key",
            ),
        ] {
            let error = keys(http, admin).err().unwrap_or_default();
            assert!(error.starts_with(expected), "{http:?} {admin:?}: {error}");
        }
        assert!(keys("h", &format!("{}:s", "n".repeat(64))).is_ok());
    }

    #[test]
    fn a_default_secret_is_found_wherever_it_is_listed() {
        assert!(lists_secret("defaultadminkey", "defaultadminkey"));
        assert!(lists_secret(
            "new:s3cret, old:defaultadminkey",
            "defaultadminkey"
        ));
        assert!(!lists_secret("s3cret,other", "defaultadminkey"));
    }
}
