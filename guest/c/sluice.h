/*
 * sluice guest ABI v1 for C (clang --target=wasm32). See docs/abi.md.
 *
 * A handler defines two functions and exports them with SLUICE_EXPORT:
 *
 *   SLUICE_EXPORT("sluice_alloc")  int32_t sluice_alloc(int32_t len);
 *   SLUICE_EXPORT("sluice_handle") int32_t sluice_handle(int32_t ptr, int32_t len);
 *
 * (SLUICE_DEFINE_STATIC_ALLOC below provides a sluice_alloc backed by a static buffer.)
 * Build without libc:
 *   clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -Wl,--export-dynamic \
 *         -I guest/c -o build/example.wasm guest/c/examples/threshold.c
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>
#include <stdint.h>

#define SLUICE_EXPORT(name) __attribute__((export_name(name)))
#define SLUICE_IMPORT(name) __attribute__((import_module("sluice"), import_name(name)))

/* Status returned by sluice_handle. */
enum { SLUICE_ACK = 0, SLUICE_RETRY = 1, SLUICE_REJECT = 2 };

/* Return codes of sluice_emit. */
enum {
  SLUICE_EMIT_OK = 0,
  SLUICE_EMIT_NOT_ALLOWED = -1,
  SLUICE_EMIT_TOO_LARGE = -2,
  SLUICE_EMIT_BAD_TOPIC = -3,
  SLUICE_EMIT_QUOTA = -4,
};

enum { SLUICE_TRACE = 0, SLUICE_DEBUG = 1, SLUICE_INFO = 2, SLUICE_WARN = 3, SLUICE_ERROR = 4 };

/* Host imports. Pointers are guest addresses; bad ranges stop the handler (ERR_GUEST_MEMORY). */
SLUICE_IMPORT("emit")
int32_t sluice_emit(const void *topic, int32_t topic_len, const void *data, int32_t data_len);
SLUICE_IMPORT("log") void sluice_log(int32_t level, const void *msg, int32_t len);
SLUICE_IMPORT("deadline_ms") int64_t sluice_deadline_ms(void);
SLUICE_IMPORT("config_len") int32_t sluice_config_len(void);
SLUICE_IMPORT("config_read") int32_t sluice_config_read(void *buf, int32_t len);

/* Envelope v1 (little-endian; wasm32 is little-endian, so plain loads work). */
#define SLUICE_FLAG_SUBJECT 1u
#define SLUICE_FLAG_TRACEPARENT 2u
#define SLUICE_FLAG_DEADLINE 4u

typedef struct {
  const uint8_t *ptr; /* NOT NUL-terminated */
  uint32_t len;
} sluice_bytes;

typedef struct {
  uint16_t version;
  uint32_t flags;
  int64_t time_unix_nanos;
  int64_t deadline_unix_nanos; /* 0 unless flags & SLUICE_FLAG_DEADLINE */
  sluice_bytes id, type, source, subject, traceparent, data;
} sluice_event;

static inline uint32_t sluice__u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline int64_t sluice__i64(const uint8_t *p) {
  return (int64_t)((uint64_t)sluice__u32(p) | (uint64_t)sluice__u32(p + 4) << 32);
}

/* Parses the envelope at buf. Returns 0 on success, -1 if it is not a v1 envelope or is
 * shorter than its declared fields. */
static inline int sluice_parse(const uint8_t *buf, uint32_t len, sluice_event *ev) {
  if (len < 56 || buf[0] != 'S' || buf[1] != 'L' || buf[2] != 'E' || buf[3] != 'V') return -1;
  ev->version = (uint16_t)(buf[4] | buf[5] << 8);
  if (ev->version != 1) return -1;
  uint32_t at = (uint32_t)(buf[6] | buf[7] << 8);
  if (at < 56 || at > len) return -1;
  ev->flags = sluice__u32(buf + 8);
  ev->time_unix_nanos = sluice__i64(buf + 16);
  ev->deadline_unix_nanos = sluice__i64(buf + 24);
  sluice_bytes *fields[6] = {&ev->id, &ev->type, &ev->source, &ev->subject, &ev->traceparent, &ev->data};
  for (int i = 0; i < 6; i++) {
    uint32_t n = sluice__u32(buf + 32 + 4 * i);
    if (n > len - at) return -1;
    fields[i]->ptr = buf + at;
    fields[i]->len = n;
    at += n;
  }
  return 0;
}

static inline int sluice_bytes_eq(sluice_bytes b, const char *s) {
  uint32_t i = 0;
  for (; s[i]; i++)
    if (i >= b.len || b.ptr[i] != (uint8_t)s[i]) return 0;
  return i == b.len;
}

static inline uint32_t sluice__strlen(const char *s) {
  uint32_t n = 0;
  while (s[n]) n++;
  return n;
}

static inline int32_t sluice_emit_str(const char *topic, const void *data, int32_t len) {
  return sluice_emit(topic, (int32_t)sluice__strlen(topic), data, len);
}

static inline void sluice_log_str(int32_t level, const char *msg) {
  sluice_log(level, msg, (int32_t)sluice__strlen(msg));
}

/* A sluice_alloc backed by one static buffer: events larger than `size` get 0, which the host
 * reports as ERR_GUEST_MEMORY. One instance handles one event at a time, so reuse is safe. */
#define SLUICE_DEFINE_STATIC_ALLOC(size)                                   \
  static uint8_t sluice__inbox[size];                                      \
  SLUICE_EXPORT("sluice_alloc") int32_t sluice_alloc(int32_t len) {        \
    return len >= 0 && (uint32_t)len <= (size) ? (int32_t)(uintptr_t)sluice__inbox : 0; \
  }

#endif /* SLUICE_H */
