//! Resolving a bearer token to who it is (name and role): the configured `--token` /
//! `MEND_API_TOKEN` is the admin `MEND_API_TOKEN`; the tokens made with `mend tokens create`
//! are read from the store and kept for at most [`TOKEN_CACHE_TTL`], so a revoked token stops
//! working within that bound and a busy server reads the table at most once per period.
//! Whether any token exists (and so whether the server is open to loopback callers only) is
//! answered the same way: the configured token, or any stored token that is not revoked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mend::auth::{constant_time_eq, hash_token, ApiToken, Principal, Role};
use mend::Store;
use tokio::sync::Mutex;

/// How long the stored tokens are cached: a revoked token (or a new one, or the first one,
/// which turns on auth) takes effect within this time.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(2);

/// The principal name of the configured `--token` / `MEND_API_TOKEN` (an admin).
pub const CONFIGURED_TOKEN_NAME: &str = "MEND_API_TOKEN";

/// The principal of a request to a server without any token (loopback callers only).
pub const LOCAL_NAME: &str = "local";

/// The active stored tokens and when they were read.
type Cached = Option<(Instant, Arc<Vec<ApiToken>>)>;

/// The stored tokens that are not revoked, cached.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<dyn Store>,
    cache: Arc<Mutex<Cached>>,
}

impl Tokens {
    /// Tokens read from `store`.
    pub fn new(store: Arc<dyn Store>) -> Tokens {
        Tokens {
            store,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The active stored tokens, at most [`TOKEN_CACHE_TTL`] old. When the store cannot be
    /// read, the last list is used (logged); without one, the error is returned.
    pub async fn active(&self) -> Result<Arc<Vec<ApiToken>>, mend::StoreError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, list)) = cache.as_ref() {
            if at.elapsed() < TOKEN_CACHE_TTL {
                return Ok(list.clone());
            }
        }
        match self.store.token_list().await {
            Ok(all) => {
                let list: Arc<Vec<ApiToken>> =
                    Arc::new(all.into_iter().filter(|t| t.revoked_at.is_none()).collect());
                *cache = Some((Instant::now(), list.clone()));
                Ok(list)
            }
            Err(e) => match cache.as_ref() {
                Some((_, list)) => {
                    tracing::warn!(error = %e, "cannot read the API tokens; using the last list read");
                    Ok(list.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Forgets the cache (tests, and right after this process changed the tokens).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    /// Whether the server has any token: the configured one, or a stored one not revoked.
    pub async fn any(&self, configured: Option<&str>) -> Result<bool, mend::StoreError> {
        if configured.is_some() {
            return Ok(true);
        }
        Ok(!self.active().await?.is_empty())
    }

    /// Who `given` is, if it is a valid token.
    pub async fn resolve(
        &self,
        configured: Option<&str>,
        given: &str,
    ) -> Result<Option<Principal>, mend::StoreError> {
        if let Some(t) = configured {
            if constant_time_eq(given.as_bytes(), t.as_bytes()) {
                return Ok(Some(Principal {
                    name: CONFIGURED_TOKEN_NAME.to_owned(),
                    role: Role::Admin,
                }));
            }
        }
        let hash = hash_token(given);
        let list = self.active().await?;
        // Every entry is compared, so the time taken does not say which one matched.
        let mut found = None;
        for t in list.iter() {
            if constant_time_eq(hash.as_bytes(), t.hash.as_bytes()) {
                found = Some(Principal {
                    name: t.name.clone(),
                    role: t.role,
                });
            }
        }
        Ok(found)
    }

    /// The principal named `name` and the key its dashboard sessions are signed with (the
    /// token's hash), if it is a current token.
    pub async fn by_name(
        &self,
        configured: Option<&str>,
        name: &str,
    ) -> Result<Option<(Principal, String)>, mend::StoreError> {
        if name == CONFIGURED_TOKEN_NAME {
            return Ok(configured.map(|t| {
                (
                    Principal {
                        name: name.to_owned(),
                        role: Role::Admin,
                    },
                    hash_token(t),
                )
            }));
        }
        let list = self.active().await?;
        Ok(list.iter().find(|t| t.name == name).map(|t| {
            (
                Principal {
                    name: t.name.clone(),
                    role: t.role,
                },
                t.hash.clone(),
            )
        }))
    }
}
