//! Secrets in job args: the one masking function (API answers, CLI output, dashboard and logs
//! all use [`mask`]), and optional encryption of args at rest per kind.
//!
//! Encryption is AES-256-GCM (RustCrypto's `aes-gcm`) with keys from the environment,
//! `MEND_ARGS_KEYS="id1:BASE64,id2:BASE64"` (32-byte keys): the first encrypts, every one
//! decrypts, so a key is rotated by putting a new one first and keeping the old one listed
//! while jobs encrypted with it remain. Encrypted args are stored as an envelope
//! (`{"$mend_enc": 1, "kid", "nonce", "ct"}`) bound to the job's id, so an envelope copied onto
//! another job does not decrypt. [`EncryptedArgs`] wraps a store: it encrypts the args of the
//! chosen kinds on insert and decrypts every envelope it reads; without a chosen kind nothing
//! is wrapped and nothing costs anything. [`check_keys`] refuses to start with a key that does
//! not match what is stored (a check value per key id, kept in the database).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use async_trait::async_trait;
use base64::Engine;
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::*;
use crate::{JobRow, NewJob};

/// What a masked value reads as.
pub const MASK: &str = "•••";

/// Words that make a key secret-looking (compared lowercase, `-` as `_`, anywhere in the key).
const SECRET_WORDS: [&str; 10] = [
    "authorization",
    "token",
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "cookie",
];

/// Whether values under `key` are treated as secrets.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// `value` with the values under secret-looking keys replaced by [`MASK`], at any depth.
/// Returns how many were masked (a `null` is left as it is).
pub fn mask(value: &Value) -> (Value, usize) {
    fn walk(v: &Value, n: &mut usize) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        if is_secret_key(k) && !v.is_null() {
                            *n += 1;
                            (k.clone(), Value::String(MASK.into()))
                        } else {
                            (k.clone(), walk(v, n))
                        }
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| walk(v, n)).collect()),
            other => other.clone(),
        }
    }
    let mut n = 0;
    let v = walk(value, &mut n);
    (v, n)
}

/// Whether serialised JSON may hold a secret-looking key: a quick scan that lets a caller
/// skip parsing an answer [`mask`] would leave as it is. It errs towards `true` (a secret
/// word in a value also counts). serde_json writes letters, `-` and `_` unescaped, so JSON
/// it wrote cannot hide a key from this scan.
pub fn may_hold_secrets(json: &[u8]) -> bool {
    // `str::contains` (std's substring search) rather than a byte-window loop: this runs on
    // every masked answer.
    let lower = String::from_utf8_lossy(json).to_ascii_lowercase();
    SECRET_WORDS
        .iter()
        .any(|w| lower.contains(w) || (w.contains('_') && lower.contains(&w.replace('_', "-"))))
}

/// Masks every JSON a job carries that a caller wrote: args, result, checkpoint and the
/// args of its pending cleanups.
pub fn mask_job(job: &mut JobRow) {
    job.args = mask(&job.args).0;
    if let Some(r) = &job.result {
        job.result = Some(mask(r).0);
    }
    if let Some(c) = &job.checkpoint {
        job.checkpoint = Some(mask(c).0);
    }
    for c in &mut job.pending_cleanups {
        c.args = mask(&c.args).0;
    }
}

/// The environment variable holding the args keys.
pub const KEYS_ENV: &str = "MEND_ARGS_KEYS";

/// The environment variable holding a single args key (key id `default`), used when
/// [`KEYS_ENV`] is not set.
pub const KEY_ENV: &str = "MEND_ARGS_KEY";

/// The envelope's marker key.
const ENVELOPE: &str = "$mend_enc";

/// What the key check value encrypts.
const CHECK_PLAINTEXT: &[u8] = b"mend args key check v1";

/// A key error: what is wrong and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// The args keys: the first encrypts, all decrypt.
pub struct ArgsKeys {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for ArgsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: the keys never reach a log.
        f.debug_struct("ArgsKeys")
            .field("ids", &self.ids())
            .finish()
    }
}

impl ArgsKeys {
    /// Parses `id1:BASE64,id2:BASE64` (standard base64 of 32 bytes each; ids of letters,
    /// digits, `-`, `_`, `.`).
    pub fn parse(spec: &str) -> Result<ArgsKeys, KeyError> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for (i, part) in spec.split(',').map(str::trim).enumerate() {
            if part.is_empty() {
                continue;
            }
            let Some((id, b64)) = part.split_once(':') else {
                return Err(KeyError(format!(
                    "{KEYS_ENV}: entry {} has no key id; write ID:BASE64 (e.g. k2026:$(openssl rand -base64 32))",
                    i + 1
                )));
            };
            let id = id.trim();
            if id.is_empty()
                || id.len() > 32
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(KeyError(format!(
                    "{KEYS_ENV}: key id {id:?} must be 1 to 32 letters, digits, '-', '_' or '.'"
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| {
                    KeyError(format!(
                        "{KEYS_ENV}: key {id} is not valid base64 ({e}); make one with `openssl rand -base64 32`"
                    ))
                })?;
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| {
                KeyError(format!(
                    "{KEYS_ENV}: key {id} is {} bytes; AES-256 needs 32 (`openssl rand -base64 32`)",
                    bytes.len()
                ))
            })?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(KeyError(format!("{KEYS_ENV}: key id {id} is listed twice")));
            }
            keys.push((id.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(KeyError(format!(
                "{KEYS_ENV} is empty; write ID:BASE64[,ID:BASE64...]"
            )));
        }
        Ok(ArgsKeys { keys })
    }

    /// The keys from [`KEYS_ENV`]; without it, the single key of [`KEY_ENV`] (key id
    /// `default`); `None` when neither is set.
    pub fn from_env() -> Result<Option<ArgsKeys>, KeyError> {
        match std::env::var(KEYS_ENV) {
            Ok(spec) => return ArgsKeys::parse(&spec).map(Some),
            Err(std::env::VarError::NotPresent) => {}
            Err(e) => return Err(KeyError(format!("{KEYS_ENV}: {e}"))),
        }
        match std::env::var(KEY_ENV) {
            Ok(key) => ArgsKeys::parse(&format!("default:{key}")).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(KeyError(format!("{KEY_ENV}: {e}"))),
        }
    }

    /// The key ids, the encrypting one first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Value, KeyError> {
        let (kid, cipher) = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(&nonce, Payload { msg: plain, aad })
            .map_err(|_| KeyError("encrypting args failed".into()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(serde_json::json!({
            ENVELOPE: 1,
            "kid": kid,
            "nonce": b64.encode(nonce),
            "ct": b64.encode(ct),
        }))
    }

    fn open(&self, envelope: &Value, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let field = |name: &str| {
            envelope
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| KeyError(format!("the encrypted args have no {name}")))
        };
        let kid = field("kid")?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce = b64
            .decode(field("nonce")?)
            .map_err(|e| KeyError(format!("the encrypted args' nonce is not base64: {e}")))?;
        let ct = b64
            .decode(field("ct")?)
            .map_err(|e| KeyError(format!("the encrypted args are not base64: {e}")))?;
        if nonce.len() != 12 {
            return Err(KeyError("the encrypted args' nonce is not 12 bytes".into()));
        }
        let Some((_, cipher)) = self.keys.iter().find(|(id, _)| id == kid) else {
            return Err(KeyError(format!(
                "args encrypted with key id {kid}, which {KEYS_ENV} does not list"
            )));
        };
        cipher
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad })
            .map_err(|_| {
                KeyError(format!(
                    "args encrypted with key id {kid} do not decrypt with the key {KEYS_ENV} gives that id"
                ))
            })
    }

    /// `args` of job `id` sealed in an envelope.
    pub fn encrypt(&self, id: Uuid, args: &Value) -> Result<Value, KeyError> {
        let plain = serde_json::to_vec(args)
            .map_err(|e| KeyError(format!("args cannot be serialised: {e}")))?;
        self.seal(&plain, id.as_bytes())
    }

    /// The args inside job `id`'s envelope.
    pub fn decrypt(&self, id: Uuid, envelope: &Value) -> Result<Value, KeyError> {
        let plain = self.open(envelope, id.as_bytes())?;
        serde_json::from_slice(&plain)
            .map_err(|e| KeyError(format!("decrypted args are not JSON: {e}")))
    }

    /// A value only key `kid` (configured here) turns back into [`CHECK_PLAINTEXT`].
    fn check_value(&self, kid: &str) -> Result<String, KeyError> {
        let Some((_, cipher)) = self.keys.iter().find(|(id, _)| id == kid) else {
            return Err(KeyError(format!("no key {kid}")));
        };
        let one = ArgsKeys {
            keys: vec![(kid.to_owned(), cipher.clone())],
        };
        Ok(one.seal(CHECK_PLAINTEXT, kid.as_bytes())?.to_string())
    }

    fn verify_check(&self, kid: &str, check: &str) -> bool {
        serde_json::from_str::<Value>(check)
            .ok()
            .and_then(|v| self.open(&v, kid.as_bytes()).ok())
            .is_some_and(|p| p == CHECK_PLAINTEXT)
    }
}

/// Whether `args` is an encrypted envelope.
pub fn is_envelope(args: &Value) -> bool {
    args.get(ENVELOPE).is_some()
}

/// A stored key check: an envelope only the key with that id opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsKeyCheck {
    /// The key id.
    pub kid: String,
    /// The check envelope (JSON text).
    pub check: String,
}

/// Checks the configured keys against the checks stored by earlier runs, before anything is
/// read or written: a stored key id the configuration lacks, or a configured key that does
/// not open its id's check, is an error saying what to fix, and nothing is stored. When all
/// is well and `encrypting` (some kind is encrypted), checks for new key ids are stored; keys
/// given only to read old rows leave no trace.
pub async fn check_keys(
    store: &dyn Store,
    keys: Option<&ArgsKeys>,
    encrypting: bool,
) -> Result<(), KeyError> {
    let stored = store
        .args_keys()
        .await
        .map_err(|e| KeyError(format!("reading the stored key checks: {e}")))?;
    let Some(keys) = keys else {
        if stored.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = stored.iter().map(|k| k.kid.as_str()).collect();
        return Err(KeyError(format!(
            "this database holds job args encrypted with key id(s) {}; set {KEYS_ENV}=ID:BASE64,... with those keys (nothing was changed)",
            ids.join(", ")
        )));
    };
    for s in &stored {
        if !keys.ids().contains(&s.kid.as_str()) {
            return Err(KeyError(format!(
                "this database holds job args encrypted with key id {}, which {KEYS_ENV} does not list; keep old keys after the first one until their jobs are pruned (nothing was changed)",
                s.kid
            )));
        }
        if !keys.verify_check(&s.kid, &s.check) {
            return Err(KeyError(format!(
                "the key {KEYS_ENV} gives for id {} is not the one this database's args were encrypted with; restore the right key (nothing was changed)",
                s.kid
            )));
        }
    }
    for kid in keys.ids() {
        if encrypting && stored.iter().all(|s| s.kid != kid) {
            store
                .args_key_add(ArgsKeyCheck {
                    kid: kid.to_owned(),
                    check: keys.check_value(kid)?,
                })
                .await
                .map_err(|e| KeyError(format!("storing the check of key {kid}: {e}")))?;
        }
    }
    Ok(())
}

/// A store whose chosen kinds have their args encrypted at rest. Every row it returns has
/// its envelope opened; one that cannot be opened keeps its envelope (and a warning is
/// logged) so a list still shows the rest.
pub struct EncryptedArgs {
    inner: Arc<dyn Store>,
    keys: Arc<ArgsKeys>,
    kinds: HashSet<String>,
}

impl EncryptedArgs {
    /// Wraps `inner`: jobs of `kinds` are encrypted with `keys`' first key.
    pub fn new(inner: Arc<dyn Store>, keys: Arc<ArgsKeys>, kinds: HashSet<String>) -> Self {
        EncryptedArgs { inner, keys, kinds }
    }

    fn seal_jobs(&self, jobs: &mut [NewJob]) -> Result<()> {
        for job in jobs.iter_mut() {
            if !self.kinds.contains(&job.kind) {
                continue;
            }
            if job
                .unique
                .as_ref()
                .is_some_and(|u| !matches!(u.by_args, crate::unique::ByArgs::None))
            {
                return Err(StoreError::InvalidJob(crate::job::InvalidJob::new(
                    "unique.by_args",
                    "cannot be used for a kind whose args are encrypted at rest; make the job unique by kind (and period), or use an idempotency key",
                )));
            }
            job.args = self
                .keys
                .encrypt(job.id, &job.args)
                .map_err(|e| StoreError::database(e.0))?;
        }
        Ok(())
    }

    fn open(&self, job: &mut JobRow) {
        if !is_envelope(&job.args) {
            return;
        }
        match self.keys.decrypt(job.id, &job.args) {
            Ok(args) => job.args = args,
            Err(e) => tracing::warn!(job = %job.id, error = %e, "cannot decrypt a job's args"),
        }
    }

    fn open_all(&self, mut jobs: Vec<JobRow>) -> Vec<JobRow> {
        for j in &mut jobs {
            self.open(j);
        }
        jobs
    }
}

#[async_trait]
impl Store for EncryptedArgs {
    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }
    async fn insert_many(&self, mut jobs: Vec<NewJob>) -> Result<Vec<JobRow>> {
        self.seal_jobs(&mut jobs)?;
        Ok(self.open_all(self.inner.insert_many(jobs).await?))
    }
    async fn claim(&self, params: ClaimParams) -> Result<Vec<JobRow>> {
        Ok(self.open_all(self.inner.claim(params).await?))
    }
    async fn complete_many(&self, params: CompleteParams) -> Result<CompleteResult> {
        self.inner.complete_many(params).await
    }
    async fn complete_with_effect(&self, params: CompleteWithEffectParams) -> Result<bool> {
        self.inner.complete_with_effect(params).await
    }
    async fn checkpoint(&self, params: CheckpointParams) -> Result<bool> {
        self.inner.checkpoint(params).await
    }
    async fn defer_durable(&self, params: DeferDurableParams) -> Result<Option<u32>> {
        self.inner.defer_durable(params).await
    }
    async fn cleanup_done(&self, params: CleanupDoneParams) -> Result<bool> {
        self.inner.cleanup_done(params).await
    }
    async fn extend_leases(&self, params: ExtendLeasesParams) -> Result<ExtendLeasesResult> {
        self.inner.extend_leases(params).await
    }
    async fn rescue(&self, params: RescueParams) -> Result<Vec<Rescued>> {
        let mut out = self.inner.rescue(params).await?;
        for r in &mut out {
            self.open(&mut r.job);
        }
        Ok(out)
    }
    async fn cancel(&self, params: CancelParams) -> Result<Vec<JobRow>> {
        Ok(self.open_all(self.inner.cancel(params).await?))
    }
    async fn retry(&self, params: RetryParams) -> Result<Vec<JobRow>> {
        Ok(self.open_all(self.inner.retry(params).await?))
    }
    async fn get(&self, id: Uuid) -> Result<Option<JobRow>> {
        let mut job = self.inner.get(id).await?;
        if let Some(j) = &mut job {
            self.open(j);
        }
        Ok(job)
    }
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<JobRow>> {
        Ok(self.open_all(self.inner.get_many(ids).await?))
    }
    async fn list(&self, params: ListParams) -> Result<JobPage> {
        let mut page = self.inner.list(params).await?;
        page.jobs = self.open_all(std::mem::take(&mut page.jobs));
        Ok(page)
    }
    async fn queue_counts(&self) -> Result<Vec<QueueCount>> {
        self.inner.queue_counts().await
    }

    async fn live_queue_counts(&self) -> Result<Vec<QueueCount>> {
        self.inner.live_queue_counts().await
    }
    async fn count_states(&self, p: CountStatesParams) -> Result<Vec<StateCount>> {
        self.inner.count_states(p).await
    }
    async fn count_ahead(&self, p: CountAheadParams) -> Result<u64> {
        self.inner.count_ahead(p).await
    }
    async fn queue_heads(&self, queues: Vec<String>) -> Result<Vec<JobRow>> {
        Ok(self.open_all(self.inner.queue_heads(queues).await?))
    }
    async fn delete_final(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>> {
        self.inner.delete_final(ids).await
    }
    async fn register_node(&self, node: NodeInfo) -> Result<()> {
        self.inner.register_node(node).await
    }
    async fn heartbeat_node(&self, params: HeartbeatNodeParams) -> Result<bool> {
        self.inner.heartbeat_node(params).await
    }
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        self.inner.list_nodes().await
    }
    async fn deregister_nodes(&self, ids: Vec<String>) -> Result<()> {
        self.inner.deregister_nodes(ids).await
    }
    async fn prune(&self, params: PruneParams) -> Result<u64> {
        self.inner.prune(params).await
    }
    async fn set_queue_paused(&self, params: SetQueuePausedParams) -> Result<()> {
        self.inner.set_queue_paused(params).await
    }
    async fn paused_queues(&self) -> Result<Vec<String>> {
        self.inner.paused_queues().await
    }
    async fn set_limit(&self, params: SetLimitParams) -> Result<()> {
        self.inner.set_limit(params).await
    }
    async fn delete_limit(&self, name: String) -> Result<bool> {
        self.inner.delete_limit(name).await
    }
    async fn list_limits(&self) -> Result<Vec<LimitState>> {
        self.inner.list_limits().await
    }
    async fn limit_usage(&self, params: LimitUsageParams) -> Result<LimitUsage> {
        self.inner.limit_usage(params).await
    }
    async fn prune_limit_buckets(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<u64> {
        self.inner.prune_limit_buckets(now, limit).await
    }
    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wakeup()
    }
    async fn dead_nodes(&self, params: DeadNodesParams) -> Result<Vec<String>> {
        self.inner.dead_nodes(params).await
    }
    async fn is_leader(&self) -> Result<bool> {
        self.inner.is_leader().await
    }
    fn rescue_interval(&self) -> Option<Duration> {
        self.inner.rescue_interval()
    }
    fn rescue_wakeup(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.rescue_wakeup()
    }

    fn routes_wakeup(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.routes_wakeup()
    }
    async fn cron_upsert(&self, params: UpsertCronParams) -> Result<crate::cron::CronRow> {
        self.inner.cron_upsert(params).await
    }
    async fn cron_list(&self) -> Result<Vec<crate::cron::CronRow>> {
        self.inner.cron_list().await
    }
    async fn cron_get(&self, name: String) -> Result<Option<crate::cron::CronRow>> {
        self.inner.cron_get(name).await
    }
    async fn cron_set_paused(
        &self,
        params: SetCronPausedParams,
    ) -> Result<Option<crate::cron::CronRow>> {
        self.inner.cron_set_paused(params).await
    }
    async fn cron_delete(&self, name: String) -> Result<bool> {
        self.inner.cron_delete(name).await
    }
    async fn cron_due(&self, params: DueCronParams) -> Result<Vec<crate::cron::CronRow>> {
        self.inner.cron_due(params).await
    }
    async fn cron_advance(&self, mut params: AdvanceCronParams) -> Result<Option<Vec<JobRow>>> {
        self.seal_jobs(&mut params.jobs)?;
        Ok(self
            .inner
            .cron_advance(params)
            .await?
            .map(|jobs| self.open_all(jobs)))
    }
    async fn doctor_stats(&self, params: DoctorParams) -> Result<DoctorStats> {
        self.inner.doctor_stats(params).await
    }
    async fn add_stats(&self, deltas: Vec<crate::stats::StatsDelta>) -> Result<()> {
        self.inner.add_stats(deltas).await
    }
    async fn stats(&self, params: crate::stats::StatsParams) -> Result<crate::stats::StatsAnswer> {
        self.inner.stats(params).await
    }
    async fn add_events(&self, events: Vec<crate::stats::Event>) -> Result<()> {
        self.inner.add_events(events).await
    }
    async fn events(&self, params: crate::stats::EventsParams) -> Result<Vec<crate::stats::Event>> {
        self.inner.events(params).await
    }
    async fn prune_history(&self, params: crate::stats::PruneHistoryParams) -> Result<u64> {
        self.inner.prune_history(params).await
    }
    async fn token_create(&self, params: crate::auth::CreateTokenParams) -> Result<bool> {
        self.inner.token_create(params).await
    }
    async fn token_list(&self) -> Result<Vec<crate::auth::ApiToken>> {
        self.inner.token_list().await
    }
    async fn token_revoke(&self, params: crate::auth::RevokeTokenParams) -> Result<bool> {
        self.inner.token_revoke(params).await
    }
    async fn audit_add(&self, entries: Vec<crate::audit::NewAuditEntry>) -> Result<()> {
        self.inner.audit_add(entries).await
    }
    async fn audit_list(
        &self,
        params: crate::audit::AuditParams,
    ) -> Result<Vec<crate::audit::AuditEntry>> {
        self.inner.audit_list(params).await
    }
    async fn audit_prune(&self, params: crate::audit::PruneAuditParams) -> Result<u64> {
        self.inner.audit_prune(params).await
    }
    async fn args_keys(&self) -> Result<Vec<ArgsKeyCheck>> {
        self.inner.args_keys().await
    }
    async fn args_key_add(&self, check: ArgsKeyCheck) -> Result<()> {
        self.inner.args_key_add(check).await
    }

    async fn rollout_start(
        &self,
        r: crate::rollout::Rollout,
    ) -> Result<Option<crate::rollout::Rollout>> {
        self.inner.rollout_start(r).await
    }
    async fn rollout_list(&self) -> Result<Vec<crate::rollout::Rollout>> {
        self.inner.rollout_list().await
    }
    async fn rollout_get(&self, id: Uuid) -> Result<Option<crate::rollout::Rollout>> {
        self.inner.rollout_get(id).await
    }
    async fn rollout_save(
        &self,
        r: crate::rollout::Rollout,
    ) -> Result<Option<crate::rollout::Rollout>> {
        self.inner.rollout_save(r).await
    }
    async fn rollout_routes(&self) -> Result<Vec<crate::rollout::RouteState>> {
        self.inner.rollout_routes().await
    }
    async fn add_version_samples(&self, s: Vec<crate::store::VersionSample>) -> Result<()> {
        self.inner.add_version_samples(s).await
    }
    async fn version_samples(
        &self,
        p: crate::store::VersionSamplesParams,
    ) -> Result<Vec<crate::store::VersionSample>> {
        self.inner.version_samples(p).await
    }
    async fn rollout_heal(&self, p: crate::store::HealParams) -> Result<Vec<Uuid>> {
        self.inner.rollout_heal(p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let (v, n) = mask(&json!({
            "user": 7,
            "Authorization": "Bearer x",
            "nested": {"api-key": "k", "list": [{"password": "p", "ok": 1}]},
            "token_count": null
        }));
        assert_eq!(n, 3);
        assert_eq!(v["user"], 7);
        assert_eq!(v["Authorization"], MASK);
        assert_eq!(v["nested"]["api-key"], MASK);
        assert_eq!(v["nested"]["list"][0]["password"], MASK);
        assert_eq!(v["nested"]["list"][0]["ok"], 1);
        for (text, may) in [
            (r#"{"API-Key": 1}"#, true),
            (r#"{"x": {"PassWord": 1}}"#, true),
            (r#"{"user": "ann", "n": [1, 2]}"#, false),
        ] {
            assert_eq!(may_hold_secrets(text.as_bytes()), may, "{text}");
        }
    }

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=";

    #[test]
    fn envelopes_open_with_any_listed_key_and_only_for_their_job() {
        let old = ArgsKeys::parse(&format!("old:{K1}")).unwrap();
        let both = ArgsKeys::parse(&format!("new:{K2}, old:{K1}")).unwrap();
        let id = Uuid::now_v7();
        let args = json!({"password": "hunter2", "n": 1});
        let env = old.encrypt(id, &args).unwrap();
        assert!(is_envelope(&env));
        assert!(!env.to_string().contains("hunter2"));
        assert_eq!(
            both.decrypt(id, &env).unwrap(),
            args,
            "rotation: old still opens"
        );
        assert_eq!(both.encrypt(id, &args).unwrap()["kid"], "new");
        let err = both.decrypt(Uuid::now_v7(), &env).unwrap_err();
        assert!(err.0.contains("do not decrypt"), "{err}");
        let wrong = ArgsKeys::parse(&format!("old:{K2}")).unwrap();
        assert!(wrong.decrypt(id, &env).is_err());
        let check = old.check_value("old").unwrap();
        assert!(both.verify_check("old", &check));
        assert!(!wrong.verify_check("old", &check));
    }

    #[test]
    fn bad_key_specs_say_what_to_do() {
        for (spec, says) in [
            ("", "empty"),
            ("nokid", "no key id"),
            ("a:!!!", "not valid base64"),
            ("a:AAAA", "needs 32"),
            (&format!("a:{K1},a:{K2}"), "twice"),
        ] {
            let e = ArgsKeys::parse(spec).unwrap_err();
            assert!(e.0.contains(says), "{spec}: {e}");
        }
    }
}
