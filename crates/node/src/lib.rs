//! The N-API binding of sluice: `#[napi]` wrappers only. Arguments are converted, core errors
//! become JS errors whose message starts with their stable code, and every export runs under
//! `guard` so a Rust panic becomes an error instead of aborting Node. No business logic lives here.

#[global_allocator]
static ALLOCATOR: alloc::Mimalloc = alloc::Mimalloc;

mod alloc;
mod audit;
mod bus;
mod context;
mod delivery;
mod deployment;
mod fast;
mod fast_take;
mod guard;
mod observe;
mod pending;
mod subscription;
mod text;
mod wake;

pub use bus::{
    publish_batch_to, publish_bytes_to, publish_to, try_publish_batch_to, try_publish_bytes_to, try_publish_to, watch_durable,
    NativeBus,
};
pub use audit::NativeAuditGate;
pub use bus::NativeReplay;
pub use context::NativeContext;
pub use delivery::DeliveryInit;
pub use deployment::NativeDeployment;
pub use observe::NativeRecorder;
pub use pending::NativePending;
pub use subscription::NativeSubscription;
