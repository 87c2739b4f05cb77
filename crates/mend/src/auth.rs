//! API tokens and their roles: what a token may do, how a token is made and how it is stored.
//!
//! A token is 32 random bytes (base64url, prefixed `mend_`), shown once when it is made. The
//! store keeps only its SHA-256: tokens are random, not chosen by people, so a fast hash is
//! enough (nobody can guess their way to a 256-bit preimage) and a lookup stays cheap. Which
//! route needs which role is decided by the server (`mend-server`'s role table), not here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, secrets shown in clear.
    Admin,
    /// Retry, cancel, pause and resume queues, limits, cron; and all a viewer may.
    Operator,
    /// Enqueue jobs (one or a batch) and read a job by its id.
    Producer,
    /// The remote-worker protocol: claim, heartbeat, finish, and the attempt routes.
    Worker,
    /// Read only.
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Producer,
        Role::Worker,
        Role::Viewer,
    ];

    /// The role's name, as stored and as typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a role name; the error lists the valid ones.
    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}: use one of {}",
                    Role::ALL.map(Role::as_str).join(", ")
                )
            })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a request: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (`admin` for the configured `--token`, `local` without any token).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// A stored token (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiToken {
    /// Its name, unique among tokens that are not revoked.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token, lowercase hex.
    #[serde(skip_serializing)]
    pub hash: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Who made it (`cli:<os user>` or a token's name).
    pub created_by: String,
    /// When it was revoked; a revoked token opens nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Store a new token's hash under `name`.
#[derive(Debug, Clone)]
pub struct CreateTokenParams {
    /// The name (must not belong to a token that is not revoked).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// [`hash_token`] of the token.
    pub hash: String,
    /// Now.
    pub now: DateTime<Utc>,
    /// Who makes it.
    pub created_by: String,
}

/// Revoke the token named `name`.
#[derive(Debug, Clone)]
pub struct RevokeTokenParams {
    /// The token's name.
    pub name: String,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The prefix of every token mend makes, so a leaked one is easy to recognise (secret
/// scanners, logs).
pub const TOKEN_PREFIX: &str = "mend_";

/// Longest token name.
pub const MAX_TOKEN_NAME: usize = 64;

/// A new random token: [`TOKEN_PREFIX`] and 32 bytes from the operating system's generator,
/// base64url.
pub fn generate_token() -> String {
    use aes_gcm::aead::rand_core::RngCore;
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aes_gcm::aead::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// SHA-256 of `token`, lowercase hex: what the store keeps.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Checks a token name: 1 to [`MAX_TOKEN_NAME`] characters of letters, digits, `-`, `_`, `.`
/// (it shows up in the audit log and on the command line).
pub fn validate_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOKEN_NAME {
        return Err(format!(
            "a token name has 1 to {MAX_TOKEN_NAME} characters, got {}",
            name.len()
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "token name {name:?} may only hold letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40, "{a}");
        assert_eq!(hash_token(&a).len(), 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn roles_and_names_parse() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
        }
        assert!(Role::parse("root").unwrap_err().contains("admin, operator"));
        assert!(validate_token_name("ci-deploy.1").is_ok());
        assert!(validate_token_name("").is_err());
        assert!(validate_token_name("a b").is_err());
    }
}
