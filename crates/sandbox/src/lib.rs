//! sluice-sandbox: runs untrusted event handlers as WebAssembly modules in Wasmtime.
//!
//! Plain Rust, no N-API, no dependency on the bus: the bus hands in envelopes and gets back
//! outcomes and emits. Pieces:
//!
//! - [`SandboxEngine`]: the process-wide Wasmtime engine (pooling allocator, epoch
//!   interruption, copy-on-write images, bounded stack) and its epoch ticker thread.
//! - [`ModuleRegistry`] / [`HandlerModule`]: compile once per `sha256:` hash, check guest ABI v1.
//! - [`Sandbox`]: one deployment; `handle` runs an [`Envelope`] on a pooled instance under
//!   [`Limits`] and returns a [`HandleResult`].
//!
//! The guest ABI is specified in `docs/abi.md`.

pub mod abi;
mod deployment;
mod dispatch;
mod engine;
pub mod envelope;
mod epoch;
mod error;
mod host;
mod limits;
mod pool;
mod prefetch;
mod record;
mod registry;
mod remote;
pub mod rollout;
mod stats;
mod stripe;
pub mod topic;

pub use abi::{check_guest_range, LogLevel, ABI_VERSION};
pub use deployment::{DeployError, DeploySpec, Deployment, DeploymentInfo, Deployments, Isolation};
pub use remote::{RemoteExecutor, RemoteFactory, RemoteInfo, RemoteOutcome};
pub use engine::{EngineConfig, SandboxEngine};
pub use envelope::{
    decode_envelope, encode_envelope, encode_envelope_into, Envelope, EnvelopeError,
};
pub use error::{ErrorKind, GuestMemoryFault, SandboxError};
pub use host::{Emit, LogRecord};
pub use limits::{Limits, MAX_CONFIG_BYTES, MAX_TIMEOUT_MS};
pub use pool::{HandleResult, InstanceCounts, Outcome, Sandbox, SandboxInfo, SandboxOptions};
pub use registry::{module_hash, HandlerModule, ModuleRegistry, MAX_MODULE_BYTES};
pub use rollout::{AutoRollback, RolloutInfo, RolloutSpec, Traffic};
pub use stats::{LatencySnapshot, OutcomeCounts};
pub use topic::{AllowList, TopicPattern};
