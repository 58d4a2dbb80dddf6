//! Hot reload and canary rollout of a deployment's handler, by module hash.
//!
//! A deployment runs a *current* version and, during a rollout, a *candidate*. Workers read an
//! immutable routing table (`ArcSwap`) once per event and hand the event to exactly one
//! version; changes (rollout, traffic steps, promote, rollback, automatic rollback) build a new
//! table under the control lock and swap it in whole. An event already taken by a version
//! finishes there; a version's instances are released when the last table and the last event
//! holding it let go (`version.rs`). See `docs/rollout.md`.

mod clock;
mod history;
mod info;
mod release;
mod route;
mod shadow;
mod version;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sluice_core::observe::{Kind, Recorder};

use crate::deployment::DeployError;
use crate::envelope::Envelope;
use crate::pool::{HandleResult, SandboxOptions};
use crate::registry::HandlerModule;
use crate::remote::RemoteState;
use crate::stats::{Histogram, LatencySnapshot, OutcomeCounts};
use crate::topic::TopicPattern;
use crate::ErrorKind;

pub use history::{Action, HistoryEntry, HISTORY_LIMIT};
pub use info::{AutoRollbackInfo, CandidateInfo, RollbackInfo, RolloutInfo, VersionInfo, VersionInstances};
pub use shadow::ShadowInfo;
pub use watch::{AutoRollback, Verdict};
pub(crate) use release::{on_event_path, release as release_off_path};

use clock::unix_ms;
use history::History;
use route::{Candidate, Mode, Rule, Table, FULL};
use shadow::ShadowStats;
pub(crate) use version::{Body, HashRecord, Held, Lease, Module, Version};
pub(crate) use route::Route;
pub(crate) use shadow::{Expected, ShadowLink};
pub(crate) use watch::Watch;

/// Hashes this deployment remembers as "previous" for `rollback()`.
const LINEAGE_LIMIT: usize = 64;

/// Which events a candidate gets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// Share of matching events, 0..=100 (0.01 % resolution), chosen by the hash of the event
    /// id: a redelivered event sees the same version.
    pub percent: f64,
    /// Topics or patterns (`order.*`); empty: every topic.
    pub event_types: Vec<String>,
    /// Label selector: the candidate gets traffic only on deployments whose labels include all
    /// of these.
    pub labels: BTreeMap<String, String>,
}

/// `dep.rollout(bytes, spec)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolloutSpec {
    /// Refuse the bytes unless their `sha256:` is this.
    pub expected_hash: Option<String>,
    pub traffic: Traffic,
    /// Give the candidate copies instead of the events themselves.
    pub shadow: bool,
    /// `None`: no automatic rollback.
    pub auto_rollback: Option<AutoRollback>,
}

fn err(code: &'static str, message: impl Into<String>) -> DeployError {
    DeployError { code, message: message.into() }
}

fn invalid(message: impl Into<String>) -> DeployError {
    err("ERR_INVALID_ARG", message)
}

/// The candidate as the control side remembers it (the table holds the version itself).
struct CandidateState {
    hash: String,
    traffic: Traffic,
    shadow: bool,
    auto_rollback: Option<AutoRollback>,
    since: u64,
}

struct State {
    /// Every hash this deployment has run.
    records: HashMap<String, Arc<HashRecord>>,
    order: Vec<String>,
    /// Hashes that were current, oldest first: `rollback()` without a candidate goes back one.
    lineage: Vec<String>,
    candidate: Option<CandidateState>,
    history: History,
    last_rollback: Option<RollbackInfo>,
    last_shadow: Option<(String, Arc<ShadowStats>, Arc<AtomicBool>)>,
    shadow_threads: Vec<JoinHandle<()>>,
    stopped: bool,
}

/// The versions of one deployment and the routing between them.
pub(crate) struct Rollout {
    name: Arc<str>,
    /// The bus's lifecycle recorder: every history entry is also a `RolloutStep` record.
    recorder: Arc<Recorder>,
    options: SandboxOptions,
    labels: BTreeMap<String, String>,
    /// Helper processes of a process-isolated deployment: versions are activated there.
    remote: Option<Arc<RemoteState>>,
    table: ArcSwap<Table>,
    state: Mutex<State>,
    me: Weak<Rollout>,
}

impl Rollout {
    /// Activates the first version (instances created, `sluice_init` run).
    pub fn start(
        name: &str,
        module: Arc<HandlerModule>,
        options: SandboxOptions,
        labels: BTreeMap<String, String>,
        recorder: Arc<Recorder>,
        actor: Option<&str>,
    ) -> Result<Arc<Rollout>, DeployError> {
        let record = HashRecord::new(Module::Compiled(module));
        let current = record.activate(&options, None)?;
        Ok(Rollout::with_current(name, record, current, options, labels, recorder, actor, None))
    }

    /// Starts with a version already running: a process-isolated deployment's first helpers
    /// (`remote` activates the later ones).
    #[allow(clippy::too_many_arguments)]
    pub fn with_current(
        name: &str,
        record: Arc<HashRecord>,
        current: Arc<Version>,
        options: SandboxOptions,
        labels: BTreeMap<String, String>,
        recorder: Arc<Recorder>,
        actor: Option<&str>,
        remote: Option<Arc<RemoteState>>,
    ) -> Arc<Rollout> {
        let hash = record.hash.clone();
        let state = State {
            records: HashMap::from([(hash.clone(), record)]),
            order: vec![hash.clone()],
            lineage: vec![hash.clone()],
            candidate: None,
            history: History::default(),
            last_rollback: None,
            last_shadow: None,
            shadow_threads: Vec::new(),
            stopped: false,
        };
        let rollout = Arc::new_cyclic(|me| Rollout {
            name: name.into(),
            recorder,
            options,
            labels,
            remote,
            table: ArcSwap::from_pointee(Table { current, candidate: None }),
            state: Mutex::new(state),
            me: me.clone(),
        });
        rollout.log(&mut rollout.lock(), HistoryEntry::new(Action::Deploy, &hash, "", actor));
        rollout
    }

    /// Appends to the audit trail and tells observers (`Kind::RolloutStep`: name = deployment,
    /// reason = the action, detail = the entry as JSON).
    fn log(&self, st: &mut State, entry: HistoryEntry) {
        self.recorder.note(Kind::RolloutStep, |r| {
            r.name(&self.name).reason(entry.action.as_str()).detail(serde_json::to_string(&entry).unwrap_or_default())
        });
        st.history.push(entry);
    }

    pub fn current_hash(&self) -> String {
        self.table.load().current.hash().to_owned()
    }

    /// The per-event budget, the same for every version.
    pub fn timeout(&self) -> Duration {
        self.options.limits.timeout()
    }

    /// Picks the version for one event. The returned route holds the routing table (and with
    /// it every version it names) until the event is done, through arc-swap's guard: no write
    /// to the table's shared reference count per event; a swap meanwhile turns the guard into
    /// a full reference.
    pub fn route(&self, envelope: &Envelope<'_>) -> Routed<'_> {
        self.route_by(envelope.id, envelope.event_type)
    }

    /// `route` by the event's id and topic.
    pub fn route_by(&self, id: &str, topic: &str) -> Routed<'_> {
        let table = self.table.load();
        let pick = table.route(id, topic);
        Routed { rollout: self, table, pick }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rule(&self, t: &Traffic) -> Result<Rule, DeployError> {
        if !t.percent.is_finite() || !(0.0..=100.0).contains(&t.percent) {
            return Err(invalid(format!("percent must be a number in 0..=100, got {}", t.percent)));
        }
        let event_types = t
            .event_types
            .iter()
            .map(|p| TopicPattern::parse(p).map_err(|e| invalid(format!("eventTypes: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rule {
            basis_points: ((t.percent * 100.0).round() as u32).min(FULL),
            event_types,
            labels_match: t.labels.iter().all(|(k, v)| self.labels.get(k) == Some(v)),
        })
    }

    /// The helper processes of the current version (process-isolated deployments).
    pub fn current_helpers(&self) -> Vec<crate::remote::RemoteInfo> {
        self.table.load().current.activation().map(|a| a.helpers()).unwrap_or_default()
    }

    fn activate(&self, record: &Arc<HashRecord>) -> Result<Arc<Version>, DeployError> {
        record.activate(&self.options, self.remote.as_ref())
    }

    /// Feeds a candidate's completed event to its watch; crossing a threshold rolls back.
    pub fn observe(&self, watch: &Arc<Watch>, elapsed: Duration, error: bool) {
        if let Some(verdict) = watch.record(elapsed, error) {
            self.auto_rollback(watch, verdict);
        }
    }

    /// A refused candidate leaves no trace in `info().versions`.
    fn forget_unused(&self, st: &mut State, hash: &str) {
        if st.records.get(hash).is_some_and(|r| r.activations.load(Ordering::Relaxed) == 0) {
            st.records.remove(hash);
            st.order.retain(|h| h != hash);
        }
    }

    fn record_for(&self, st: &mut State, module: &Module) -> Arc<HashRecord> {
        let hash = module.hash();
        if let Some(r) = st.records.get(hash) {
            return r.clone();
        }
        let r = HashRecord::new(module.clone());
        st.records.insert(hash.to_owned(), r.clone());
        st.order.push(hash.to_owned());
        r
    }

    /// Routes a compiled candidate. Rolling out the candidate's own bytes again changes its
    /// rule (a step such as 5 → 20 %); other bytes replace it. Nothing changes on error.
    pub fn rollout(&self, module: &Module, spec: &RolloutSpec, actor: Option<&str>) -> Result<(), DeployError> {
        let rule = self.rule(&spec.traffic)?;
        if let Some(a) = &spec.auto_rollback {
            a.validate().map_err(invalid)?;
        }
        // Helpers take tens of milliseconds to start: not under the control lock, which
        // dispatchers take to roll back automatically. The lock is taken again to swap.
        let early = match &self.remote {
            Some(_) => {
                let record = {
                    let mut st = self.lock();
                    let table = self.table.load();
                    let same = table.candidate.as_ref().is_some_and(|c| c.version.hash() == module.hash());
                    (!same && table.current.hash() != module.hash()).then(|| self.record_for(&mut st, module))
                };
                match record.map(|r| self.activate(&r)).transpose() {
                    Ok(v) => v,
                    Err(e) => {
                        self.forget_unused(&mut self.lock(), module.hash());
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let mut st = self.lock();
        if st.stopped {
            return Err(err("ERR_CLOSED", format!("deployment '{}' is stopped", self.name)));
        }
        let table = self.table.load_full();
        let hash = module.hash();
        if table.current.hash() == hash {
            return Err(invalid(format!("{hash} is already the current version of '{}'", self.name)));
        }
        let same = table.candidate.as_ref().filter(|c| c.version.hash() == hash);
        let version = match (same, early) {
            (Some(c), _) => c.version.clone(),
            (None, Some(v)) => v,
            (None, None) => {
                let record = self.record_for(&mut st, module);
                match self.activate(&record) {
                    Ok(v) => v,
                    Err(e) => {
                        self.forget_unused(&mut st, module.hash());
                        return Err(e);
                    }
                }
            }
        };
        // Evidence gathered on this candidate carries over a step unless the thresholds change.
        let watch = match (same, &spec.auto_rollback) {
            (_, None) => None,
            (Some(c), Some(rules)) if c.watch.as_ref().is_some_and(|w| &w.rules == rules) => c.watch.clone(),
            (_, Some(rules)) => Some(Arc::new(Watch::new(rules.clone()))),
        };
        let mode = if spec.shadow {
            let reuse = same.and_then(|c| match &c.mode {
                Mode::Shadow(link) if c.watch.as_ref().map(Arc::as_ptr) == watch.as_ref().map(Arc::as_ptr) => {
                    Some(link.clone())
                }
                _ => None,
            });
            match reuse {
                Some(link) => Mode::Shadow(link),
                None => Mode::Shadow(self.start_shadow(&mut st, &version, watch.clone())?),
            }
        } else {
            Mode::Live
        };
        let replaced = table.candidate.as_ref().filter(|c| c.version.hash() != hash).map(|c| c.version.hash().to_owned());
        deactivate_unless(&table, &mode);
        self.table.store(Arc::new(Table {
            current: table.current.clone(),
            candidate: Some(Candidate { version, rule, mode, watch }),
        }));
        let mut entry = HistoryEntry::new(Action::Rollout, hash, table.current.hash(), actor);
        entry.percent = Some(spec.traffic.percent);
        entry.shadow = spec.shadow;
        entry.reason = replaced.map(|h| format!("replaces candidate {h}"));
        self.log(&mut st, entry);
        let since = st.candidate.as_ref().filter(|c| c.hash == hash).map_or_else(unix_ms, |c| c.since);
        st.candidate = Some(CandidateState {
            hash: hash.to_owned(),
            traffic: spec.traffic.clone(),
            shadow: spec.shadow,
            auto_rollback: spec.auto_rollback.clone(),
            since,
        });
        Ok(())
    }

    fn start_shadow(
        &self,
        st: &mut State,
        version: &Arc<Version>,
        watch: Option<Arc<Watch>>,
    ) -> Result<Arc<ShadowLink>, DeployError> {
        // A new shadow of the same hash keeps counting into the same stats.
        let stats = match &st.last_shadow {
            Some((h, s, _)) if h == version.hash() => s.clone(),
            _ => Arc::new(ShadowStats::default()),
        };
        let me = self.me.clone();
        let trip = Box::new(move |w: &Arc<Watch>, v: Verdict| {
            if let Some(r) = me.upgrade() {
                r.auto_rollback(w, v);
            }
        });
        let link = if version.activation().is_some() {
            // The dispatchers send the copies to the candidate's helpers themselves.
            drop((watch, trip));
            ShadowLink::detached(stats.clone())
        } else {
            let (link, handle) = shadow::start(&self.name, version.clone(), stats.clone(), watch, trip)
                .map_err(|e| err("ERR_INSTANTIATE", format!("cannot start the shadow thread: {e}")))?;
            st.shadow_threads.retain(|h| !h.is_finished());
            st.shadow_threads.push(handle);
            link
        };
        st.last_shadow = Some((version.hash().to_owned(), stats, link.active.clone()));
        Ok(Arc::new(link))
    }

    /// Changes the candidate's share of traffic.
    pub fn set_traffic(&self, traffic: &Traffic, actor: Option<&str>) -> Result<(), DeployError> {
        let rule = self.rule(traffic)?;
        let mut st = self.lock();
        let table = self.table.load_full();
        let (Some(c), Some(cs)) = (table.candidate.as_ref(), st.candidate.as_mut()) else {
            return Err(err("ERR_NO_CANDIDATE", format!("'{}' has no rollout in progress", self.name)));
        };
        let mode = match &c.mode {
            Mode::Live => Mode::Live,
            Mode::Shadow(link) => Mode::Shadow(link.clone()),
        };
        self.table.store(Arc::new(Table {
            current: table.current.clone(),
            candidate: Some(Candidate { version: c.version.clone(), rule, mode, watch: c.watch.clone() }),
        }));
        cs.traffic = traffic.clone();
        let mut entry = HistoryEntry::new(Action::Traffic, c.version.hash(), table.current.hash(), actor);
        entry.percent = Some(traffic.percent);
        entry.shadow = cs.shadow;
        self.log(&mut st, entry);
        Ok(())
    }

    /// Makes the candidate current.
    pub fn promote(&self, actor: Option<&str>) -> Result<String, DeployError> {
        let mut st = self.lock();
        let table = self.table.load_full();
        let Some(c) = table.candidate.as_ref() else {
            return Err(err("ERR_NO_CANDIDATE", format!("'{}' has no candidate to promote", self.name)));
        };
        let hash = c.version.hash().to_owned();
        self.switch(&mut st, &table, c.version.clone());
        push_lineage(&mut st.lineage, &hash);
        self.log(&mut st, HistoryEntry::new(Action::Promote, &hash, table.current.hash(), actor));
        Ok(hash)
    }

    /// Without `to_hash`: drops the candidate, or (with none) returns to the version current
    /// before this one. With `to_hash`: makes that earlier version current (its compiled module
    /// must still be in `registry`) and drops any candidate. Returns the hash now current.
    pub fn rollback(
        &self,
        to_hash: Option<&str>,
        registry: impl FnOnce(&str) -> Option<Module>,
        actor: Option<&str>,
        reason: Option<&str>,
    ) -> Result<String, DeployError> {
        // Helpers of the version to restore are started before the lock is taken for the swap
        // (as in `rollout`); the swap below uses them if the target is still the same.
        let prepared = match &self.remote {
            Some(_) => self.restore_target(to_hash).map(|r| self.activate(&r)).transpose()?,
            None => None,
        };
        let prepared = |hash: &str| prepared.clone().filter(|v| v.hash() == hash);
        let mut st = self.lock();
        let table = self.table.load_full();
        let current = table.current.hash().to_owned();
        let candidate = table.candidate.as_ref().map(|c| c.version.hash().to_owned());
        let (taken_out, target) = match (to_hash, &candidate) {
            (None, Some(c)) => (c.clone(), table.current.clone()),
            (Some(h), Some(c)) if h == current => (c.clone(), table.current.clone()),
            (Some(h), None) if h == current => {
                return Err(invalid(format!("{h} is already the current version of '{}'", self.name)));
            }
            (None, None) => {
                let Some(previous) = st.lineage.len().checked_sub(2).map(|i| st.lineage[i].clone()) else {
                    return Err(err("ERR_UNKNOWN_VERSION", format!("'{}' has no earlier version to roll back to", self.name)));
                };
                let record = st.records.get(&previous).cloned().expect("lineage hashes have records");
                let version = match prepared(&previous) {
                    Some(v) => v,
                    None => self.activate(&record)?,
                };
                st.lineage.pop();
                (current.clone(), version)
            }
            (Some(h), _) => {
                let module = match st.records.get(h) {
                    Some(r) => r.module.clone(),
                    None => registry(h).ok_or_else(|| {
                        err("ERR_UNKNOWN_VERSION", format!("{h} is not a version known to this process"))
                    })?,
                };
                let record = self.record_for(&mut st, &module);
                let version = match prepared(h) {
                    Some(v) => v,
                    None => self.activate(&record)?,
                };
                push_lineage(&mut st.lineage, h);
                (current.clone(), version)
            }
        };
        let restored = target.hash().to_owned();
        self.switch(&mut st, &table, target);
        let reason = reason.map_or_else(|| "rollback requested".to_owned(), str::to_owned);
        let mut entry = HistoryEntry::new(Action::Rollback, &restored, &current, actor);
        entry.reason = Some(format!("{reason}; took out {taken_out}"));
        self.log(&mut st, entry);
        st.last_rollback = Some(RollbackInfo {
            at: unix_ms(),
            hash: taken_out,
            restored: restored.clone(),
            automatic: false,
            reason,
            actor: actor.map(str::to_owned),
            events: None,
            error_rate: None,
            p99_ms: None,
        });
        Ok(restored)
    }

    /// The record of the version a `rollback(to_hash)` would make current, if it must be
    /// activated (not the current version, nor a rollback that only drops the candidate).
    fn restore_target(&self, to_hash: Option<&str>) -> Option<Arc<HashRecord>> {
        let st = self.lock();
        let table = self.table.load();
        let current = table.current.hash();
        let hash = match (to_hash, &table.candidate) {
            (Some(h), _) if h != current => h.to_owned(),
            (None, None) => st.lineage.len().checked_sub(2).map(|i| st.lineage[i].clone())?,
            _ => return None,
        };
        st.records.get(&hash).cloned()
    }

    /// Called by the worker (or shadow thread) whose event crossed a threshold of `watch`.
    fn auto_rollback(&self, watch: &Arc<Watch>, verdict: Verdict) {
        let mut st = self.lock();
        let table = self.table.load_full();
        let Some(c) = table.candidate.as_ref().filter(|c| c.watch.as_ref().is_some_and(|w| Arc::ptr_eq(w, watch))) else {
            return; // That candidate is already gone.
        };
        let hash = c.version.hash().to_owned();
        let current = table.current.hash().to_owned();
        self.switch(&mut st, &table, table.current.clone());
        let mut entry = HistoryEntry::new(Action::AutoRollback, &current, &current, None);
        entry.reason = Some(format!("{}; took out {hash}", verdict.reason));
        self.log(&mut st, entry);
        st.last_rollback = Some(RollbackInfo {
            at: unix_ms(),
            hash,
            restored: current,
            automatic: true,
            reason: verdict.reason,
            actor: None,
            events: Some(verdict.events),
            error_rate: Some(verdict.error_rate),
            p99_ms: Some(verdict.p99.as_secs_f64() * 1e3),
        });
    }

    /// Installs a table with `current` and no candidate.
    fn switch(&self, st: &mut State, old: &Table, current: Arc<Version>) {
        deactivate_unless(old, &Mode::Live);
        self.table.store(Arc::new(Table { current, candidate: None }));
        st.candidate = None;
    }

    /// No more candidate or shadow; waits for shadow threads. Workers must be stopped first.
    pub fn stop(&self) {
        let threads = {
            let mut st = self.lock();
            st.stopped = true;
            let table = self.table.load_full();
            self.switch(&mut st, &table, table.current.clone());
            std::mem::take(&mut st.shadow_threads)
        };
        for t in threads {
            let _ = t.join();
        }
        // A shadow thread may have dropped its version last: undeploy returns with every
        // version's instances released.
        release::flush();
    }

    pub fn info(&self) -> RolloutInfo {
        let st = self.lock();
        let table = self.table.load_full();
        let role = |hash: &str| {
            if table.current.hash() == hash {
                return "current";
            }
            match &table.candidate {
                Some(c) if c.version.hash() == hash => match c.mode {
                    Mode::Live => "candidate",
                    Mode::Shadow(_) => "shadow",
                },
                _ => "retired",
            }
        };
        let versions = st
            .order
            .iter()
            .filter_map(|h| st.records.get(h))
            .map(|r| {
                let live = r.live();
                let (live_n, idle) = live.as_ref().map_or((0, 0), |v| v.instance_counts());
                let pids = live.as_ref().and_then(|v| v.activation().map(|a| a.pids())).unwrap_or_default();
                let c = &r.counters;
                let releases = r.releases.load(Ordering::Relaxed);
                VersionInfo {
                    hash: r.hash.clone(),
                    role: role(&r.hash),
                    in_flight: r.in_flight.get(),
                    released: r.released(),
                    pids,
                    activations: r.activations.load(Ordering::Relaxed),
                    releases,
                    released_at: (releases > 0).then(|| r.last_released_ms.load(Ordering::Relaxed)),
                    instances: VersionInstances {
                        live: live_n,
                        idle,
                        created: c.instances_created.load(Ordering::Relaxed),
                        discarded: c.instances_discarded.load(Ordering::Relaxed),
                    },
                    handled: info::handled(c),
                    outcomes: info::outcomes_info(&c.outcomes()),
                    latency_us: info::latency_info(&c.latency()),
                }
            })
            .collect();
        let candidate = st.candidate.as_ref().map(|cs| {
            let labels_match = table.candidate.as_ref().is_some_and(|c| c.rule.labels_match);
            CandidateInfo {
                hash: cs.hash.clone(),
                percent: cs.traffic.percent,
                event_types: cs.traffic.event_types.clone(),
                labels: cs.traffic.labels.clone(),
                labels_match,
                shadow: cs.shadow,
                auto_rollback: cs.auto_rollback.as_ref().map(|a| AutoRollbackInfo {
                    max_error_rate: a.max_error_rate,
                    max_p99_ms: a.max_p99.map(|d| d.as_secs_f64() * 1e3),
                    window_ms: a.window.as_millis() as u64,
                    min_events: a.min_events,
                }),
                since: cs.since,
            }
        });
        RolloutInfo {
            labels: self.labels.clone(),
            versions,
            candidate,
            shadow: st.last_shadow.as_ref().map(|(h, s, active)| s.info(h, active.load(Ordering::Relaxed))),
            last_rollback: st.last_rollback.clone(),
            history: st.history.entries(),
            history_dropped: st.history.dropped,
        }
    }

    /// The deployment's totals over every version, in the shape of one sandbox's info.
    pub fn totals_info(&self) -> crate::pool::SandboxInfo {
        let t = self.totals();
        crate::pool::SandboxInfo {
            hash: self.current_hash(),
            concurrency: self.options.concurrency,
            limits: self.options.limits.clone(),
            emits: self.options.emits.clone(),
            instances: crate::pool::InstanceCounts { live: t.live, idle: t.idle, created: t.created, discarded: t.discarded },
            outcomes: t.outcomes,
            emits_accepted: t.emits_accepted,
            emits_refused: t.emits_refused,
            emits_discarded: t.emits_discarded,
            logs_dropped: t.logs_dropped,
            latency: t.latency,
        }
    }

    /// Sums over every version: the deployment's totals.
    pub fn totals(&self) -> Totals {
        let records: Vec<Arc<HashRecord>> = self.lock().records.values().cloned().collect();
        let mut t = Totals::default();
        let mut errors: HashMap<ErrorKind, u64> = HashMap::new();
        for r in &records {
            let c = &r.counters;
            let o = c.outcomes();
            t.outcomes.ack += o.ack;
            t.outcomes.retry += o.retry;
            t.outcomes.reject += o.reject;
            for (k, n) in o.errors {
                *errors.entry(k).or_default() += n;
            }
            if let Some(v) = r.live() {
                let (live, idle) = v.instance_counts();
                t.live += live;
                t.idle += idle;
            }
            t.created += c.instances_created.load(Ordering::Relaxed);
            t.discarded += c.instances_discarded.load(Ordering::Relaxed);
            t.emits_accepted += c.sum(|s| &s.emits_accepted);
            t.emits_refused += c.sum(|s| &s.emits_refused);
            t.emits_discarded += c.sum(|s| &s.emits_discarded);
            t.logs_dropped += c.sum(|s| &s.logs_dropped);
        }
        t.outcomes.errors = ErrorKind::ALL.iter().filter_map(|k| errors.get(k).map(|n| (*k, *n))).collect();
        t.latency = Histogram::merged(&records.iter().flat_map(|r| r.counters.histograms()).collect::<Vec<_>>());
        t
    }
}

/// One event's version, chosen by one routing table.
pub(crate) struct Routed<'r> {
    rollout: &'r Rollout,
    table: arc_swap::Guard<Arc<Table>>,
    pick: Route,
}

impl Routed<'_> {
    fn candidate(&self) -> &Candidate {
        self.table.candidate.as_ref().expect("picked from a table with a candidate")
    }

    /// The version that handles the event for real.
    pub fn hash(&self) -> &str {
        self.version().hash()
    }

    pub fn pick(&self) -> Route {
        self.pick
    }

    pub fn version(&self) -> &Arc<Version> {
        match self.pick {
            Route::Candidate => &self.candidate().version,
            Route::Current | Route::Shadow => &self.table.current,
        }
    }

    /// The candidate's watch, when the candidate handles this event or its shadow copy.
    pub fn watch(&self) -> Option<&Arc<Watch>> {
        match self.pick {
            Route::Current => None,
            Route::Candidate | Route::Shadow => self.candidate().watch.as_ref(),
        }
    }

    /// For an event whose copy goes to a shadow candidate: the link and the candidate.
    pub fn shadow(&self) -> Option<(&Arc<ShadowLink>, &Arc<Version>)> {
        match (self.pick, &self.table.candidate) {
            (Route::Shadow, Some(Candidate { mode: Mode::Shadow(link), version, .. })) => Some((link, version)),
            _ => None,
        }
    }

    /// Runs the event on the picked version, on the instance `lease` keeps for this worker
    /// (`straight_on`: see `Sandbox::handle_kept`).
    pub fn run(&self, lease: &mut Lease, envelope: &Envelope<'_>, deadline: Option<Instant>, straight_on: bool) -> HandleResult {
        match self.pick {
            Route::Current => lease.run(&self.table.current, envelope, deadline, straight_on),
            Route::Candidate => {
                let c = self.candidate();
                let result = lease.run(&c.version, envelope, deadline, straight_on);
                if let Some(w) = &c.watch {
                    if let Some(verdict) = w.record(result.elapsed, result.outcome.error_kind().is_some()) {
                        // May wait for the rollout lock. The worker's next event cannot start
                        // from this run's end anyway: the candidate is out of the table, so the
                        // next event routes to another version, i.e. another kept instance.
                        self.rollout.auto_rollback(w, verdict);
                    }
                }
                result
            }
            Route::Shadow => {
                let result = lease.run(&self.table.current, envelope, deadline, straight_on);
                if let Mode::Shadow(link) = &self.candidate().mode {
                    link.offer(envelope, &result);
                }
                result
            }
        }
    }
}

/// Marks the shadow of `old` inactive unless `next` keeps the same link.
fn deactivate_unless(old: &Table, next: &Mode) {
    if let Some(Candidate { mode: Mode::Shadow(link), .. }) = &old.candidate {
        let kept = matches!(next, Mode::Shadow(n) if Arc::ptr_eq(n, link));
        if !kept {
            link.active.store(false, Ordering::Relaxed);
        }
    }
}

fn push_lineage(lineage: &mut Vec<String>, hash: &str) {
    lineage.push(hash.to_owned());
    if lineage.len() > LINEAGE_LIMIT {
        lineage.remove(0);
    }
}

/// A deployment's counters over all its versions.
#[derive(Default)]
pub(crate) struct Totals {
    pub outcomes: OutcomeCounts,
    pub live: usize,
    pub idle: usize,
    pub created: u64,
    pub discarded: u64,
    pub emits_accepted: u64,
    pub emits_refused: u64,
    pub emits_discarded: u64,
    pub logs_dropped: u64,
    pub latency: LatencySnapshot,
}
