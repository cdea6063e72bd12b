//! Test doubles shared by the integration tests.

#![allow(
    dead_code,
    reason = "each test crate that includes this module uses a different part of it"
)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use latch_core::audit::{AuditCheckpoint, AuditRecord};
use latch_core::model::{AccessRequest, Approval, AuditEvent, AuditFilter, Lease, Task};
use latch_core::ports::{Store, StoreError, WriteBatch};

/// An in-memory store implementing only the key-blob methods (and an empty revocation list).
#[derive(Default)]
pub struct MemStore {
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    /// When set, `key_blob` always answers `None`, as if another instance raced us between our
    /// read and our insert.
    pub hide_reads: AtomicBool,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn raw(&self, name: &str) -> Option<Vec<u8>> {
        self.blobs.lock().unwrap().get(name).cloned()
    }

    pub fn set_raw(&self, name: &str, blob: Vec<u8>) {
        self.blobs.lock().unwrap().insert(name.to_owned(), blob);
    }

    pub fn hide_reads(&self) {
        self.hide_reads.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for MemStore {
    async fn audit_records(&self, _a: i64, _l: u32) -> Result<Vec<AuditRecord>, StoreError> {
        unimplemented!()
    }
    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        unimplemented!()
    }
    async fn put_checkpoint(&self, _cp: &AuditCheckpoint) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn checkpoints(&self, _a: i64, _l: u32) -> Result<Vec<AuditCheckpoint>, StoreError> {
        unimplemented!()
    }
    async fn last_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        unimplemented!()
    }
    async fn sink_cursor(&self, _s: &str) -> Result<i64, StoreError> {
        unimplemented!()
    }
    async fn set_sink_cursor(&self, _s: &str, _q: i64) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn apply(&self, _batch: WriteBatch) -> Result<Vec<i64>, StoreError> {
        unimplemented!()
    }
    async fn task(&self, _id: &str) -> Result<Option<Task>, StoreError> {
        unimplemented!()
    }
    async fn counters(
        &self,
        _scope: latch_core::history::CounterScope,
        _subject: &str,
    ) -> Result<Vec<latch_core::history::CounterRow>, StoreError> {
        unimplemented!()
    }
    async fn live_lease_count(
        &self,
        _scope: latch_core::history::CounterScope,
        _subject: &str,
        _now: i64,
    ) -> Result<i64, StoreError> {
        unimplemented!()
    }
    async fn tasks_by_owner(&self, _owner_id: &str, _limit: u32) -> Result<Vec<Task>, StoreError> {
        unimplemented!()
    }
    async fn expired_open_tasks(&self, _now: i64, _limit: u32) -> Result<Vec<Task>, StoreError> {
        unimplemented!()
    }
    async fn request(&self, _id: &str) -> Result<Option<AccessRequest>, StoreError> {
        unimplemented!()
    }
    async fn pending_requests(&self, _limit: u32) -> Result<Vec<AccessRequest>, StoreError> {
        unimplemented!()
    }
    async fn open_tasks(&self, _after: &str, _limit: u32) -> Result<Vec<Task>, StoreError> {
        unimplemented!()
    }
    async fn live_leases(&self, _after: &str, _limit: u32) -> Result<Vec<Lease>, StoreError> {
        unimplemented!()
    }
    async fn active_freezes(&self) -> Result<Vec<latch_core::freeze::Freeze>, StoreError> {
        unimplemented!()
    }
    async fn freeze(&self, _id: &str) -> Result<Option<latch_core::freeze::Freeze>, StoreError> {
        unimplemented!()
    }
    async fn open_requests_by_task(
        &self,
        _task_id: &str,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        unimplemented!()
    }
    async fn expired_requests(
        &self,
        _now: i64,
        _limit: u32,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        unimplemented!()
    }
    async fn approvals(&self, _request_id: &str) -> Result<Vec<Approval>, StoreError> {
        unimplemented!()
    }
    async fn lease(&self, _id: &str) -> Result<Option<Lease>, StoreError> {
        unimplemented!()
    }
    async fn leases_by_task(&self, _task_id: &str) -> Result<Vec<Lease>, StoreError> {
        unimplemented!()
    }
    async fn active_leases(&self, _after_id: &str, _limit: u32) -> Result<Vec<Lease>, StoreError> {
        unimplemented!()
    }
    async fn due_leases(
        &self,
        _now: i64,
        _issuing_grace_secs: i64,
        _limit: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        unimplemented!()
    }
    async fn claim_pending_revocations(
        &self,
        _now: i64,
        _resource_id: &str,
        _owner: &str,
        _until: i64,
        _limit: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        unimplemented!()
    }
    /// No leases are stored here, so none is revoked (CRLs and KRLs come out empty).
    async fn revoked_unexpired_leases(
        &self,
        _now: i64,
        _after_id: &str,
        _limit: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        Ok(Vec::new())
    }
    async fn lease_by_credential_hmac(&self, _hmac_hex: &str) -> Result<Option<Lease>, StoreError> {
        unimplemented!()
    }
    async fn audit_events(&self, _filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        unimplemented!()
    }
    async fn key_blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.hide_reads.load(Ordering::SeqCst) {
            return Ok(None);
        }
        Ok(self.raw(name))
    }
    async fn put_key_blob_if_absent(&self, name: &str, blob: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut blobs = self.blobs.lock().unwrap();
        Ok(blobs
            .entry(name.to_owned())
            .or_insert_with(|| blob.to_vec())
            .clone())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        unimplemented!()
    }
}

/// A master key from fixed bytes.
pub fn master(byte: u8) -> latch_providers::keyring::MasterKey {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    latch_providers::keyring::MasterKey::from_base64(&text).unwrap()
}

/// A fresh, empty temporary directory.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "latch-providers-{tag}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
