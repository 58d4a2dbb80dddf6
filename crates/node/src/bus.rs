use crate::context::NativeContext;
use crate::delivery::{delivery_options, DeliveryInit};
use crate::deployment::DeployTask;
use crate::guard::guard;
use crate::pending::{NativePending, Waiting};
use crate::subscription::NativeSubscription;
use napi::bindgen_prelude::{AsyncTask, Either, External, Uint32Array, Uint8Array};
use napi_derive::napi;
use sluice_core::overflow::validate_capacity;
use sluice_core::{BatchData, Bus, BusOptions, Delivery, Encoding, Event, EventInit, FilterChain, Fsync, JournalConfig, Overflow, Published};
use sluice_sandbox::{DeploySpec, Deployments, Isolation, SandboxOptions};
use std::sync::Arc;

#[napi(object)]
pub struct JournalInit {
    pub dir: String,
    pub fsync: Option<String>,
    pub batch_interval_ms: Option<f64>,
    pub segment_bytes: Option<f64>,
}

#[napi(object)]
pub struct BusInit {
    pub capacity: Option<f64>,
    pub overflow: Option<String>,
    pub source: Option<String>,
    pub journal: Option<JournalInit>,
}

fn journal_config(j: JournalInit) -> sluice_core::Result<JournalConfig> {
    let interval = j.batch_interval_ms.map(|v| whole(v, "journal.batchIntervalMs")).transpose()?;
    Ok(JournalConfig {
        dir: j.dir.into(),
        fsync: Fsync::parse(j.fsync.as_deref().unwrap_or("batch"), interval)?,
        segment_bytes: j.segment_bytes.map(|v| whole(v, "journal.segmentBytes")).transpose()?,
    })
}

#[napi(object)]
pub struct SubscribeInit {
    pub capacity: Option<f64>,
    pub overflow: Option<String>,
    /// Declarative filter chain, JSON.
    pub filter: Option<String>,
    pub name: Option<String>,
    pub delivery: Option<DeliveryInit>,
}

#[napi(object)]
pub struct DeployInit {
    pub topics: Vec<String>,
    pub emits: Option<Vec<String>>,
    pub concurrency: Option<u32>,
    pub memory_bytes: Option<f64>,
    pub timeout_ms: Option<f64>,
    pub fuel: Option<f64>,
    pub config: Option<Uint8Array>,
    pub capacity: Option<f64>,
    pub overflow: Option<String>,
    pub delivery: Option<DeliveryInit>,
    /// `in-process` (default), `process`, `process-if-available`.
    pub isolation: Option<String>,
    /// Matched by rollout label selectors.
    pub labels: Option<std::collections::HashMap<String, String>>,
}

/// A whole non-negative number from JS, or a typed error naming the option.
fn whole(v: f64, what: &str) -> sluice_core::Result<u64> {
    if !v.is_finite() || v < 0.0 || v.fract() != 0.0 || v > 9_007_199_254_740_991.0 {
        return Err(sluice_core::Error::invalid(format!("{what} must be a whole number >= 0, got {v}")));
    }
    Ok(v as u64)
}

fn deploy_spec(init: DeployInit, bus: &Bus) -> sluice_core::Result<DeploySpec> {
    let mut sandbox = SandboxOptions::default();
    if let Some(m) = init.memory_bytes {
        sandbox.limits.memory_bytes = whole(m, "limits.memoryBytes")? as usize;
    }
    if let Some(t) = init.timeout_ms {
        sandbox.limits.timeout_ms = whole(t, "limits.timeoutMs")?;
    }
    if let Some(f) = init.fuel {
        sandbox.limits.fuel = Some(whole(f, "limits.fuel")?);
    }
    sandbox.emits = init.emits.unwrap_or_default();
    sandbox.config = init.config.map(|c| c.to_vec()).unwrap_or_default();
    sandbox.concurrency = init.concurrency.unwrap_or(1) as usize;
    Ok(DeploySpec {
        topics: init.topics,
        capacity: Some(capacity(init.capacity, bus.defaults().capacity)?),
        overflow: init.overflow.as_deref().map(Overflow::parse).transpose()?,
        delivery: delivery_options(init.delivery)?,
        sandbox,
        isolation: match init.isolation.as_deref() {
            None => Isolation::InProcess,
            Some(name) => sluice_isolate::isolation_by_name(name).ok_or_else(|| {
                sluice_core::Error::invalid(format!("isolation must be 'in-process', 'process' or 'process-if-available', got '{name}'"))
            })?,
        },
        labels: init.labels.map(|l| l.into_iter().collect()).unwrap_or_default(),
    })
}

/// Optional CloudEvents attributes of one publish.
#[napi(object)]
pub struct PublishAttrs {
    pub id: Option<String>,
    pub subject: Option<String>,
    pub traceparent: Option<String>,
}

fn capacity(v: Option<f64>, default: usize) -> sluice_core::Result<usize> {
    match v {
        None => Ok(default),
        Some(c) if c.fract() != 0.0 || !c.is_finite() => {
            Err(sluice_core::Error::invalid(format!("capacity must be an integer, got {c}")))
        }
        Some(c) => validate_capacity(c as i64),
    }
}

fn init(topic: String, data: Vec<u8>, encoding: Encoding, attrs: Option<PublishAttrs>) -> EventInit {
    let (id, subject, traceparent) = attrs.map(|a| (a.id, a.subject, a.traceparent)).unwrap_or_default();
    EventInit { topic, id, subject, traceparent, encoding: Some(encoding), data }
}

/// A batch with the traceparents a tracing observer injected (one per event, `""` for none).
/// A batch's data as JS passes it: the text of a JSON array, or byte arrays packed end to end
/// with `ends`, each event's end offset.
pub(crate) type BatchArg = Either<String, Uint8Array>;

pub(crate) fn batch_data<'a>(data: &'a BatchArg, ends: &'a Option<Uint32Array>) -> sluice_core::Result<BatchData<'a>> {
    match (data, ends) {
        (Either::A(json), None) => Ok(BatchData::Json(json.as_bytes())),
        (Either::B(bytes), Some(ends)) => Ok(BatchData::Packed { bytes: &bytes[..], ends: &ends[..] }),
        (Either::A(_), Some(_)) => Err(sluice_core::Error::invalid("a JSON batch takes no end offsets")),
        (Either::B(_), None) => Err(sluice_core::Error::invalid("a packed batch needs its end offsets (Uint32Array)")),
    }
}

fn traced(mut events: Vec<Arc<Event>>, traceparents: Option<Vec<String>>) -> sluice_core::Result<Vec<Arc<Event>>> {
    if let Some(tps) = traceparents {
        Bus::trace_batch(&mut events, &tps)?;
    }
    Ok(events)
}

fn pending(d: Delivery) -> Option<NativePending> {
    match d {
        Delivery::Done { .. } => None,
        Delivery::Pending(p) => Some(NativePending::new(Waiting::One(p))),
    }
}

/// What `publish` returns to JS: `null` (done), a pending wait, or the journal sequence number
/// whose fsync is the only thing left (JS watches many of them with `watchDurable`).
pub(crate) type PublishResult = Option<Either<NativePending, f64>>;

pub(crate) fn published(p: Published) -> PublishResult {
    match p {
        Published::Delivery(d) => pending(d).map(Either::A),
        Published::Durable(seq) => Some(Either::B(seq as f64)),
    }
}

#[napi]
pub struct NativeBus {
    inner: Arc<Bus>,
    deployments: Arc<Deployments>,
}

#[napi]
impl NativeBus {
    #[napi(constructor)]
    pub fn new(init: BusInit) -> napi::Result<Self> {
        guard(|| {
            let d = BusOptions::default();
            let opts = BusOptions {
                capacity: capacity(init.capacity, d.capacity)?,
                overflow: init.overflow.as_deref().map(Overflow::parse).transpose()?.unwrap_or(d.overflow),
                source: init.source.unwrap_or(d.source),
                journal: init.journal.map(journal_config).transpose()?,
            };
            let inner = Arc::new(Bus::new(opts)?);
            Ok(NativeBus { deployments: Arc::new(Deployments::new(inner.clone())), inner })
        })
    }

    /// Never waits. `true` if every matching subscription took the event.
    #[napi]
    pub fn try_publish(
        &self,
        topic: String,
        json: String,
        ctx: Option<&NativeContext>,
        attrs: Option<PublishAttrs>,
    ) -> napi::Result<bool> {
        guard(|| {
            self.inner.try_publish(init(topic, json.into_bytes(), Encoding::Json, attrs), ctx.map(|c| &c.inner))
        })
    }

    #[napi]
    pub fn try_publish_bytes(
        &self,
        topic: String,
        data: Uint8Array,
        ctx: Option<&NativeContext>,
        attrs: Option<PublishAttrs>,
    ) -> napi::Result<bool> {
        guard(|| {
            self.inner.try_publish(init(topic, data.to_vec(), Encoding::Binary, attrs), ctx.map(|c| &c.inner))
        })
    }

    /// `null` when done; a pending wait when a `block` subscription is full; the journal
    /// sequence number when only its fsync is outstanding (watch it with `watchDurable`).
    #[napi(ts_return_type = "NativePending | number | null")]
    pub fn publish(
        &self,
        topic: String,
        json: String,
        ctx: Option<&NativeContext>,
        attrs: Option<PublishAttrs>,
    ) -> napi::Result<PublishResult> {
        guard(|| {
            let c = ctx.map(|c| &c.inner);
            let ev = self.inner.make_event(init(topic, json.into_bytes(), Encoding::Json, attrs), c)?;
            self.inner.publish_event_ticketed(ev, c).map(published)
        })
    }

    #[napi(ts_return_type = "NativePending | number | null")]
    pub fn publish_bytes(
        &self,
        topic: String,
        data: Uint8Array,
        ctx: Option<&NativeContext>,
        attrs: Option<PublishAttrs>,
    ) -> napi::Result<PublishResult> {
        guard(|| {
            let c = ctx.map(|c| &c.inner);
            let ev = self.inner.make_event(init(topic, data.to_vec(), Encoding::Binary, attrs), c)?;
            self.inner.publish_event_ticketed(ev, c).map(published)
        })
    }

    /// `topics` has one topic for all events or one per event of `data` (see `BatchArg`).
    #[napi]
    pub fn publish_batch(
        &self,
        topics: Vec<String>,
        #[napi(ts_arg_type = "string | Uint8Array")] data: BatchArg,
        ctx: Option<&NativeContext>,
        traceparents: Option<Vec<String>>,
        ends: Option<Uint32Array>,
    ) -> napi::Result<Option<NativePending>> {
        guard(|| {
            let c = ctx.map(|c| &c.inner);
            let events = traced(self.inner.make_batch(&topics, batch_data(&data, &ends)?, c)?, traceparents)?;
            Ok(self.inner.publish_batch(events, c)?.map(|b| NativePending::new(Waiting::Batch(b, self.inner.clone()))))
        })
    }

    /// Never waits; returns how many events every matching subscription took.
    #[napi]
    pub fn try_publish_batch(
        &self,
        topics: Vec<String>,
        #[napi(ts_arg_type = "string | Uint8Array")] data: BatchArg,
        ctx: Option<&NativeContext>,
        traceparents: Option<Vec<String>>,
        ends: Option<Uint32Array>,
    ) -> napi::Result<u32> {
        guard(|| {
            let c = ctx.map(|c| &c.inner);
            let events = traced(self.inner.make_batch(&topics, batch_data(&data, &ends)?, c)?, traceparents)?;
            self.inner.try_publish_batch(events)
        })
    }

    #[napi]
    pub fn subscribe(&self, pattern: String, init: SubscribeInit) -> napi::Result<NativeSubscription> {
        guard(|| {
            let mut opts = self.inner.subscribe_options();
            opts.capacity = capacity(init.capacity, opts.capacity)?;
            if let Some(o) = init.overflow.as_deref() {
                opts.overflow = Overflow::parse(o)?;
            }
            opts.filter = init.filter.as_deref().map(FilterChain::parse).transpose()?;
            opts.name = init.name;
            opts.delivery = delivery_options(init.delivery)?;
            let sub = self.inner.subscribe(&pattern, opts)?;
            Ok(NativeSubscription::new(sub, self.inner.clone()))
        })
    }

    /// Bus and per-subscription counters as JSON.
    #[napi]
    pub fn stats(&self) -> napi::Result<String> {
        guard(|| serde_json::to_string(&self.inner.stats()).map_err(|e| sluice_core::Error::invalid(e.to_string())))
    }

    /// Re-publishes up to `limit` dead letters kept for `topic` (see docs/delivery.md).
    #[napi]
    pub fn replay(
        &self,
        topic: String,
        filter: Option<String>,
        limit: Option<f64>,
        ctx: Option<&NativeContext>,
    ) -> napi::Result<NativeReplay> {
        guard(|| {
            let filter = filter.as_deref().map(FilterChain::parse).transpose()?;
            let limit = match limit {
                None => usize::MAX,
                Some(l) => whole(l, "limit")? as usize,
            };
            let (count, pending) = self.inner.replay(&topic, filter.as_ref(), limit, ctx.map(|c| &c.inner))?;
            let pending = pending.map(|b| NativePending::new(Waiting::Batch(b, self.inner.clone())));
            Ok(NativeReplay { count: count as u32, pending: std::sync::Mutex::new(pending) })
        })
    }

    /// Stop accepting publishes; queued events stay for consumers.
    #[napi]
    pub fn close(&self) {
        self.inner.close();
    }

    /// Stop every deployment, then close every subscription; returns how many queued events
    /// were dropped (counted).
    #[napi]
    pub fn shutdown(&self) -> napi::Result<f64> {
        guard(|| {
            self.deployments.stop_all();
            Ok(self.inner.shutdown() as f64)
        })
    }

    /// Compiles `wasm` off the JS thread and starts it on its topics.
    #[napi(ts_return_type = "Promise<NativeDeployment>")]
    pub fn deploy(&self, name: String, wasm: Uint8Array, init: DeployInit) -> napi::Result<AsyncTask<DeployTask>> {
        guard(|| {
            Ok(AsyncTask::new(DeployTask {
                deployments: self.deployments.clone(),
                name,
                bytes: wasm.to_vec(),
                spec: deploy_spec(init, &self.inner)?,
            }))
        })
    }

    /// Flushes, fsyncs and closes the journal (after `shutdown`); returns how many events stay
    /// unacknowledged on disk. 0 without a journal.
    #[napi]
    pub fn close_journal(&self) -> napi::Result<f64> {
        guard(|| Ok(self.inner.close_journal()? as f64))
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The lifecycle recorder that observers drain (see `crates/node/src/observe.rs`).
    #[napi]
    pub fn recorder(&self) -> crate::observe::NativeRecorder {
        crate::observe::NativeRecorder::new(self.inner.recorder().clone(), self.inner.origin().clone())
    }

    /// The gate where WASM handler runs wait for audit observers (see `crates/node/src/audit.rs`).
    #[napi]
    pub fn audit_gate(&self) -> crate::audit::NativeAuditGate {
        crate::audit::NativeAuditGate::new(self.inner.clone())
    }

    /// A handle for the hot-path functions below: they take it as an External, which skips
    /// the per-call borrow bookkeeping napi-rs does for class receivers.
    #[napi(ts_return_type = "ExternalObject<'BusHandle'>")]
    pub fn handle(&self) -> External<Arc<Bus>> {
        External::new(self.inner.clone())
    }

    /// `tryPublish`/`tryPublishBatch` for interned topics without a Context, as hand-written
    /// N-API functions bound to this bus (see `fast.rs` for why).
    #[napi(
        ts_return_type = "{ tryPublish(topic: number, data: string | Uint8Array): boolean; tryPublishBatch(topic: number, data: string | Uint8Array, ends?: Uint32Array): number; publish(topic: number, data: string | Uint8Array): NativePending | number | null }"
    )]
    pub fn fast_publish(&self) -> crate::fast::FastPublish {
        crate::fast::FastPublish(self.inner.clone())
    }

    /// Validates a topic once and returns its id for the `…To` functions, or `null` when the
    /// table of interned topics is full (publish by name then).
    #[napi]
    pub fn intern_topic(&self, topic: String) -> napi::Result<Option<u32>> {
        guard(|| self.inner.intern_topic(&topic))
    }
}

/// What `replay` did: how many dead letters it re-published, and the wait if a `block` queue
/// was full.
#[napi]
pub struct NativeReplay {
    count: u32,
    pending: std::sync::Mutex<Option<NativePending>>,
}

#[napi]
impl NativeReplay {
    #[napi(getter)]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The pending wait, once (`null` if none or already taken).
    #[napi]
    pub fn take_pending(&self) -> Option<NativePending> {
        self.pending.lock().ok().and_then(|mut p| p.take())
    }
}

/// `tryPublish` on an interned topic.
#[napi]
pub fn try_publish_to(
    #[napi(ts_arg_type = "ExternalObject<'BusHandle'>")] bus: &External<Arc<Bus>>,
    topic: u32,
    json: String,
    ctx: Option<&NativeContext>,
) -> napi::Result<bool> {
    guard(|| {
        let c = ctx.map(|c| &c.inner);
        bus.try_publish_interned(topic, json.into_bytes(), Encoding::Json, c)
    })
}

/// `publish` on an interned topic: `null` when done, else a pending wait.
#[napi(ts_return_type = "NativePending | number | null")]
pub fn publish_to(
    #[napi(ts_arg_type = "ExternalObject<'BusHandle'>")] bus: &External<Arc<Bus>>,
    topic: u32,
    json: String,
    ctx: Option<&NativeContext>,
) -> napi::Result<PublishResult> {
    guard(|| {
        let c = ctx.map(|c| &c.inner);
        bus.publish_event_ticketed(bus.make_interned(topic, json.into_bytes(), Encoding::Json, c)?, c).map(published)
    })
}

/// `tryPublish` of bytes on an interned topic.
#[napi]
pub fn try_publish_bytes_to(
    #[napi(ts_arg_type = "ExternalObject<'BusHandle'>")] bus: &External<Arc<Bus>>,
    topic: u32,
    data: Uint8Array,
    ctx: Option<&NativeContext>,
) -> napi::Result<bool> {
    guard(|| {
        let c = ctx.map(|c| &c.inner);
        bus.try_publish_interned(topic, data.to_vec(), Encoding::Binary, c)
    })
}

/// `publish` of bytes on an interned topic.
#[napi(ts_return_type = "NativePending | number | null")]
pub fn publish_bytes_to(
    #[napi(ts_arg_type = "ExternalObject<'BusHandle'>")] bus: &External<Arc<Bus>>,
    topic: u32,
    data: Uint8Array,
    ctx: Option<&NativeContext>,
) -> napi::Result<PublishResult> {
    guard(|| {
        let c = ctx.map(|c| &c.inner);
        bus.publish_event_ticketed(bus.make_interned(topic, data.to_vec(), Encoding::Binary, c)?, c).map(published)
    })
}

/// `tryPublishBatch` of one interned topic: `json` is the array of the events' data.
#[napi]
pub fn try_publish_batch_to(
    #[napi(ts_arg_type = "ExternalObject<'BusHandle'>")] bus: &External<Arc<Bus>>,
    topic: u32,
    #[napi(ts_arg_type = "string | Uint8Array")] data: BatchArg,
    ctx: Option<&NativeContext>,
    traceparents: Option<Vec<String>>,
    ends: Option<Uint32Array>,
) -> napi::Result<u32> {
    guard(|| {
        let c = ctx.map(|c| &c.inner);
        bus.try_publish_batch(traced(bus.make_batch_interned(topic, batch_data(&data, &ends)?, c)?, traceparents)?)
    })
}

/// `publishBatch` of one interned topic.
#[napi]
pub fn publish_batch_to(
    #[napi(ts_arg_type = "ExternalObject<'BusHandle'>")] bus: &External<Arc<Bus>>,
    topic: u32,
    #[napi(ts_arg_type = "string | Uint8Array")] data: BatchArg,
    ctx: Option<&NativeContext>,
    traceparents: Option<Vec<String>>,
    ends: Option<Uint32Array>,
) -> napi::Result<Option<NativePending>> {
    guard(|| {
        let c = ctx.map(|c| &c.inner);
        let events = traced(bus.make_batch_interned(topic, batch_data(&data, &ends)?, c)?, traceparents)?;
        Ok(bus.publish_batch(events, c)?.map(|b| NativePending::new(Waiting::Batch(b, (**bus).clone()))))
    })
}

/// A wait for the fsync of journal records `first..=last` (sequence numbers `publish`
/// returned); `null` when there is nothing to wait for (no journal, fsync `never`).
#[napi]
pub fn watch_durable(
    #[napi(ts_arg_type = "ExternalObject<'BusHandle'>")] bus: &External<Arc<Bus>>,
    first: f64,
    last: f64,
) -> Option<NativePending> {
    bus.watch_durable(first as u64, last as u64).map(|w| NativePending::new(Waiting::Durable(w)))
}
