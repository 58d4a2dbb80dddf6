/* Flags orders whose data (a decimal integer amount, e.g. "1200") exceeds a threshold read from
 * the deployment config (decimal text, default 1000): emits fraud.flagged with the event id. */
#include "sluice.h"

SLUICE_DEFINE_STATIC_ALLOC(64 * 1024)

static int64_t threshold = 1000;

static int parse_int(const uint8_t *p, uint32_t n, int64_t *out) {
  int64_t v = 0;
  if (n == 0) return -1;
  for (uint32_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9') return -1;
    v = v * 10 + (p[i] - '0');
  }
  *out = v;
  return 0;
}

SLUICE_EXPORT("sluice_init") int32_t sluice_init(void) {
  uint8_t buf[32];
  int32_t n = sluice_config_read(buf, sizeof buf);
  if (n == 0) return 0;
  if (parse_int(buf, (uint32_t)n, &threshold) != 0) {
    sluice_log_str(SLUICE_ERROR, "config must be a decimal threshold");
    return 1;
  }
  return 0;
}

SLUICE_EXPORT("sluice_handle") int32_t sluice_handle(int32_t ptr, int32_t len) {
  sluice_event ev;
  if (sluice_parse((const uint8_t *)(uintptr_t)ptr, (uint32_t)len, &ev) != 0) return SLUICE_REJECT;
  if (!sluice_bytes_eq(ev.type, "order.created")) return SLUICE_REJECT;
  int64_t amount;
  if (parse_int(ev.data.ptr, ev.data.len, &amount) != 0) {
    sluice_log_str(SLUICE_WARN, "data is not a decimal amount");
    return SLUICE_REJECT;
  }
  if (amount > threshold &&
      sluice_emit_str("fraud.flagged", ev.id.ptr, (int32_t)ev.id.len) != SLUICE_EMIT_OK)
    return SLUICE_RETRY;
  return SLUICE_ACK;
}
