//! One activation of a version in helper processes: one executor per dispatcher. The
//! executors themselves live on their dispatcher threads; this is what the rollout side and
//! `info()` see of them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::rollout::HashRecord;

use super::{RemoteInfo, RemoteState};

pub(crate) struct Activation {
    record: Arc<HashRecord>,
    state: Weak<RemoteState>,
    /// Latest info of each dispatcher's helper of this activation.
    helpers: Mutex<Vec<RemoteInfo>>,
    /// The version let go of it: its dispatchers close its helpers.
    retired: AtomicBool,
    /// Helpers not closed yet; the last one closed counts the version's release.
    open: AtomicUsize,
}

impl Activation {
    pub(super) fn new(record: Arc<HashRecord>, state: Weak<RemoteState>, dispatchers: usize) -> Arc<Activation> {
        Arc::new(Activation {
            record,
            state,
            helpers: Mutex::new(vec![RemoteInfo::default(); dispatchers]),
            retired: AtomicBool::new(false),
            open: AtomicUsize::new(dispatchers),
        })
    }

    fn helpers_mut(&self) -> std::sync::MutexGuard<'_, Vec<RemoteInfo>> {
        self.helpers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every dispatcher's helper is running.
    pub fn started(&self, n: usize) {
        self.record.counters.instances_created.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn update(&self, index: usize, info: RemoteInfo) {
        self.helpers_mut()[index] = info;
    }

    pub fn helpers(&self) -> Vec<RemoteInfo> {
        self.helpers_mut().clone()
    }

    pub fn pids(&self) -> Vec<i32> {
        self.helpers_mut().iter().filter_map(|h| h.pid).collect()
    }

    pub fn live_helpers(&self) -> usize {
        self.helpers_mut().iter().filter(|h| h.pid.is_some()).count()
    }

    /// Called when the version is dropped: no table names it and no event is in its hands.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        if let Some(state) = self.state.upgrade() {
            state.note_retired();
        }
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Dispatcher `index` killed and reaped its helper (`last` = its final info).
    pub fn closed(&self, index: usize, last: RemoteInfo) {
        let c = &self.record.counters;
        // Replacements of helpers that died; the first of each was counted at start.
        c.instances_created.fetch_add(last.helpers_started.saturating_sub(1), Ordering::Relaxed);
        c.instances_discarded.fetch_add(last.deaths, Ordering::Relaxed);
        self.helpers_mut()[index] = RemoteInfo { pid: None, ..last };
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.record.mark_released();
        }
    }
}
