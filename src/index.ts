export { Bus, type BusOptions, type JournalOptions } from './bus.js';
export { Context } from './context.js';
export { Subscription } from './subscription.js';
export { EventStream } from './stream.js';
export {
  Deployment,
  type DeployOptions,
  type DeployLimits,
  type DeploymentInfo,
  type HelperInfo,
  type RolloutOptions,
  type TrafficOptions,
  type AutoRollbackOptions,
  type RollbackOptions,
  type VersionInfo,
  type HistoryEntry,
  type RollbackInfo,
} from './deployment.js';
export type { Observer, ObserverKind, AuditRecord, ObservedBus } from './observe/observer.js';
export type { ObserverStats } from './observe/hub.js';
export type { DiagnoseOptions, Diagnosis, Finding, HandlerReport, QueueReport, Severity } from './observe/diagnose.js';
export type { TraceOptions, TraceSummary, TraceEvent } from './observe/trace.js';
export { KINDS, type KindName, type LifecycleRecord, type ObservationBatch, type CountsByKind } from './observe/records.js';
export {
  SluiceError,
  Canceled,
  DeadlineExceeded,
  QueueFull,
  BusClosed,
  InvalidArgument,
  EncodeError,
  Unsupported,
  IsolationUnavailable,
  SandboxError,
  JournalError,
  JournalIoError,
  JournalFull,
  JournalReadOnly,
  JournalLocked,
  JournalCorrupt,
  RolloutError,
} from './errors.js';
export type {
  BusStats,
  CloseOptions,
  DeliveryGuarantee,
  DeliveryOptions,
  CloseReport,
  EventFor,
  EventMap,
  Filter,
  FilterOp,
  Handler,
  JournalStats,
  Overflow,
  PublishOptions,
  QueueOptions,
  ReplayOptions,
  RetryOptions,
  SluiceEvent,
  StreamOptions,
  SubscribeOptions,
  SubscriptionStats,
  TopicsMatching,
} from './types.js';
