//! A WASM deployment with a backlog on a journal, for counting how many journal ACK records
//! its acknowledgements took. Shared by the in-process test (`tests/journal_settle.rs`) and the
//! process-isolated one (`crates/isolate/tests/journal_settle.rs`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::delivery::Guarantee;
use sluice_core::{Bus, BusOptions, Delivery, DeliveryOptions, EventInit, Fsync, JournalConfig, SubscribeOptions};
use sluice_sandbox::{DeploySpec, Deployments, Isolation, Limits, SandboxOptions};

/// Data `0` acks (see the fixture).
const STATUS_BY_DATA: &str = include_str!("../fixtures/status_by_data.wat");
pub const EVENTS: usize = 64;

fn at_least_once() -> DeliveryOptions {
    DeliveryOptions { guarantee: Guarantee::AtLeastOnce, ..Default::default() }
}

fn journal_bus(dir: &Path) -> Arc<Bus> {
    let journal = JournalConfig { dir: dir.to_path_buf(), fsync: Fsync::Batch { interval_ms: 2 }, segment_bytes: None };
    Arc::new(Bus::new(BusOptions { journal: Some(journal), ..Default::default() }).unwrap())
}

/// Counts the ACK records (kind 2) in the journal's segment files (format: docs/journal.md).
fn ack_records(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        let b = std::fs::read(&path).unwrap();
        let mut off = 16;
        while off + 12 <= b.len() && b[off] == 0xd5 {
            n += usize::from(b[off + 1] == 2);
            off += 12 + u32::from_le_bytes(b[off + 4..off + 8].try_into().unwrap()) as usize;
        }
    }
    n
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Journals a backlog of `EVENTS` for deployment `d` before it exists, deploys it with
/// `isolation`, waits until every event is acknowledged, and returns how many ACK records the
/// deployment wrote for them.
pub fn ack_records_for_backlog(isolation: Isolation) -> usize {
    let tmp = TempDir(std::env::temp_dir().join(format!("sluice-settle-{}", std::process::id())));
    let dir = tmp.0.join("j");
    {
        // The deployment's journal consumer gets a backlog of EVENTS before any worker runs, so
        // the workers take full batches: a plain subscription of the same name leaves them
        // unacknowledged.
        let bus = journal_bus(&dir);
        let opts = SubscribeOptions { name: Some("deployment:d".into()), delivery: at_least_once(), ..bus.subscribe_options() };
        let sub = bus.subscribe("in", opts).unwrap();
        for i in 0..EVENTS {
            let init = EventInit { topic: "in".into(), id: Some(format!("e{i}")), data: b"0".to_vec(), ..Default::default() };
            if let Delivery::Pending(p) = bus.publish(init, None).unwrap() {
                p.wait().unwrap();
            }
        }
        bus.unsubscribe(sub.id());
        bus.shutdown();
        assert_eq!(bus.close_journal().unwrap(), EVENTS as u64);
    }
    let before = ack_records(&dir);
    let bus = journal_bus(&dir);
    let spec = DeploySpec {
        topics: vec!["in".into()],
        capacity: None,
        overflow: None,
        delivery: at_least_once(),
        sandbox: SandboxOptions { limits: Limits::default(), emits: Vec::new(), config: Vec::new(), concurrency: 1 },
        isolation,
        labels: Default::default(),
    };
    let deployments = Deployments::new(bus.clone());
    let dep = deployments.deploy("d", &wat::parse_str(STATUS_BY_DATA).unwrap(), &spec).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while bus.stats().journal.unwrap().unacknowledged > 0 {
        assert!(Instant::now() < end, "the deployment did not acknowledge its backlog");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(dep.info().outcomes.ack, EVENTS as u64);
    assert!(deployments.undeploy("d"));
    bus.shutdown();
    assert_eq!(bus.close_journal().unwrap(), 0);
    ack_records(&dir) - before
}
