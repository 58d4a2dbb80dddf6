use crate::guard::guard;
use napi::bindgen_prelude::{AsyncTask, Uint8Array};
use napi::{Env, Task};
use napi_derive::napi;
use sluice_sandbox::{AutoRollback, DeployError, DeploySpec, Deployment, Deployments, RolloutSpec, Traffic};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn to_js(e: DeployError) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("{}: {}", e.code, e.message))
}

/// Compiles and starts a deployment on a libuv worker: compilation never runs on the JS thread.
pub struct DeployTask {
    pub(crate) deployments: Arc<Deployments>,
    pub(crate) name: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) spec: DeploySpec,
}

impl Task for DeployTask {
    type Output = Arc<Deployment>;
    type JsValue = NativeDeployment;

    fn compute(&mut self) -> napi::Result<Arc<Deployment>> {
        let bytes = std::mem::take(&mut self.bytes);
        guard(|| Ok(self.deployments.deploy(&self.name, &bytes, &self.spec)))?.map_err(to_js)
    }

    fn resolve(&mut self, _env: Env, dep: Arc<Deployment>) -> napi::Result<NativeDeployment> {
        Ok(NativeDeployment { inner: dep, deployments: self.deployments.clone() })
    }
}

/// Stops a deployment off the JS thread (workers finish the event in hand, then join).
pub struct UndeployTask {
    deployments: Arc<Deployments>,
    name: String,
}

impl Task for UndeployTask {
    type Output = bool;
    type JsValue = bool;

    fn compute(&mut self) -> napi::Result<bool> {
        guard(|| Ok(self.deployments.undeploy(&self.name)))
    }

    fn resolve(&mut self, _env: Env, removed: bool) -> napi::Result<bool> {
        Ok(removed)
    }
}

#[napi(object)]
pub struct AutoRollbackInit {
    /// `false` turns automatic rollback off; other fields then do not matter.
    pub enabled: bool,
    pub max_error_rate: Option<f64>,
    pub max_p99_ms: Option<f64>,
    pub window_ms: Option<f64>,
    pub min_events: Option<f64>,
}

#[napi(object)]
pub struct TrafficInit {
    pub percent: Option<f64>,
    pub event_types: Option<Vec<String>>,
    pub labels: Option<HashMap<String, String>>,
}

#[napi(object)]
pub struct RolloutInit {
    pub expected_hash: Option<String>,
    pub traffic: TrafficInit,
    pub shadow: Option<bool>,
    /// Absent: the defaults (`AutoRollback::default()`).
    pub auto_rollback: Option<AutoRollbackInit>,
    pub actor: Option<String>,
}

#[napi(object)]
pub struct RollbackInit {
    pub to_hash: Option<String>,
    pub reason: Option<String>,
    pub actor: Option<String>,
}

fn invalid(m: String) -> napi::Error {
    to_js(DeployError { code: "ERR_INVALID_ARG", message: m })
}

fn traffic(t: TrafficInit) -> Traffic {
    Traffic {
        percent: t.percent.unwrap_or(0.0),
        event_types: t.event_types.unwrap_or_default(),
        labels: t.labels.map(|l| l.into_iter().collect()).unwrap_or_default(),
    }
}

fn millis(v: f64, what: &str) -> napi::Result<Duration> {
    if !v.is_finite() || v < 0.0 {
        return Err(invalid(format!("{what} must be a number of milliseconds >= 0, got {v}")));
    }
    Ok(Duration::from_secs_f64(v / 1e3))
}

fn auto_rollback(init: Option<AutoRollbackInit>) -> napi::Result<Option<AutoRollback>> {
    let d = AutoRollback::default();
    let Some(a) = init else { return Ok(Some(d)) };
    if !a.enabled {
        return Ok(None);
    }
    let min_events = match a.min_events {
        Some(n) if !n.is_finite() || n < 1.0 || n.fract() != 0.0 => {
            return Err(invalid(format!("autoRollback.minEvents must be a whole number >= 1, got {n}")));
        }
        Some(n) => n as u64,
        None => d.min_events,
    };
    Ok(Some(AutoRollback {
        max_error_rate: a.max_error_rate.or(d.max_error_rate),
        max_p99: a.max_p99_ms.map(|m| millis(m, "autoRollback.maxP99Ms")).transpose()?.or(d.max_p99),
        window: a.window_ms.map(|m| millis(m, "autoRollback.windowMs")).transpose()?.unwrap_or(d.window),
        min_events,
    }))
}

/// Compiles a candidate on a libuv worker and routes it.
pub struct RolloutTask {
    dep: Arc<Deployment>,
    bytes: Vec<u8>,
    spec: RolloutSpec,
    actor: Option<String>,
}

impl Task for RolloutTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> napi::Result<String> {
        let bytes = std::mem::take(&mut self.bytes);
        guard(|| Ok(self.dep.rollout(&bytes, &self.spec, self.actor.as_deref())))?.map_err(to_js)
    }

    fn resolve(&mut self, _env: Env, hash: String) -> napi::Result<String> {
        Ok(hash)
    }
}

/// Traffic steps, promotion and rollback: table swaps, but a rollback may create instances
/// (and the control lock may be held by a rollout instantiating), so off the JS thread too.
pub enum Control {
    Traffic(Traffic),
    Promote,
    Rollback { to_hash: Option<String>, reason: Option<String> },
}

pub struct ControlTask {
    dep: Arc<Deployment>,
    control: Control,
    actor: Option<String>,
}

impl Task for ControlTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> napi::Result<String> {
        let (dep, actor) = (&self.dep, self.actor.as_deref());
        let done = guard(|| {
            Ok(match &self.control {
                Control::Traffic(t) => dep.set_traffic(t, actor).map(|()| dep.hash()),
                Control::Promote => dep.promote(actor),
                Control::Rollback { to_hash, reason } => dep.rollback(to_hash.as_deref(), actor, reason.as_deref()),
            })
        })?;
        done.map_err(to_js)
    }

    fn resolve(&mut self, _env: Env, hash: String) -> napi::Result<String> {
        Ok(hash)
    }
}

#[napi]
pub struct NativeDeployment {
    inner: Arc<Deployment>,
    deployments: Arc<Deployments>,
}

#[napi]
impl NativeDeployment {
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_owned()
    }

    /// `sha256:<hex>` of the module bytes.
    #[napi(getter)]
    pub fn hash(&self) -> String {
        self.inner.hash().to_owned()
    }

    /// Instances, limits, counters per outcome, latency percentiles, queues — as JSON.
    #[napi]
    pub fn info(&self) -> napi::Result<String> {
        guard(|| serde_json::to_string(&self.inner.info()).map_err(|e| sluice_core::Error::invalid(e.to_string())))
    }

    /// Compiles `wasm` off the JS thread and routes it as the candidate; resolves to its hash.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn rollout(&self, wasm: Uint8Array, init: RolloutInit) -> napi::Result<AsyncTask<RolloutTask>> {
        let spec = RolloutSpec {
            expected_hash: init.expected_hash,
            traffic: traffic(init.traffic),
            shadow: init.shadow.unwrap_or(false),
            auto_rollback: auto_rollback(init.auto_rollback)?,
        };
        Ok(AsyncTask::new(RolloutTask { dep: self.inner.clone(), bytes: wasm.to_vec(), spec, actor: init.actor }))
    }

    /// Changes the candidate's traffic; resolves to the current hash.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn set_traffic(&self, init: TrafficInit, actor: Option<String>) -> AsyncTask<ControlTask> {
        AsyncTask::new(ControlTask { dep: self.inner.clone(), control: Control::Traffic(traffic(init)), actor })
    }

    /// Makes the candidate current; resolves to its hash.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn promote(&self, actor: Option<String>) -> AsyncTask<ControlTask> {
        AsyncTask::new(ControlTask { dep: self.inner.clone(), control: Control::Promote, actor })
    }

    /// Rolls back; resolves to the hash now current.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn rollback(&self, init: RollbackInit) -> AsyncTask<ControlTask> {
        let control = Control::Rollback { to_hash: init.to_hash, reason: init.reason };
        AsyncTask::new(ControlTask { dep: self.inner.clone(), control, actor: init.actor })
    }

    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn undeploy(&self) -> AsyncTask<UndeployTask> {
        AsyncTask::new(UndeployTask { deployments: self.deployments.clone(), name: self.inner.name().to_owned() })
    }
}
