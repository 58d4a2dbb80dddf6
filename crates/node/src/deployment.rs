use crate::guard::guard;
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use sluice_sandbox::{DeployError, DeploySpec, Deployment, Deployments};
use std::sync::Arc;

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

    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn undeploy(&self) -> AsyncTask<UndeployTask> {
        AsyncTask::new(UndeployTask { deployments: self.deployments.clone(), name: self.inner.name().to_owned() })
    }
}
