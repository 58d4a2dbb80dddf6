// The generated napi-rs loader. Internal: users import the TypeScript API.
export {
  NativeAuditGate,
  NativeBus,
  NativeContext,
  NativeDeployment,
  NativePending,
  NativeRecorder,
  NativeReplay,
  NativeSubscription,
  publishBatchTo,
  publishBytesTo,
  publishTo,
  tryPublishBatchTo,
  tryPublishBytesTo,
  tryPublishTo,
  watchDurable,
} from '../index.js';
export type { BusInit, DeliveryInit, PublishAttrs, SubscribeInit } from '../index.js';
