/*
 * edgefn.h: the edgefn host ABI, version 1, for C (functions/ABI.md is the
 * contract; this header declares every import with its exact signature).
 *
 * A function exports `handle` (and `edgefn_abi_version`, which EDGEFN_ABI_VERSION_EXPORT
 * defines), optionally `init`, and its memory. Build it with clang and wasm-ld, no libc:
 *
 *   clang --target=wasm32 -nostdlib -ffreestanding -mbulk-memory -O2 \
 *     -I functions/include -Wl,--no-entry -Wl,--stack-first \
 *     -Wl,--export=handle -Wl,--export=edgefn_abi_version \
 *     -o my_function.wasm my_function.c
 *
 * -mbulk-memory lets clang turn struct copies and memset/memcpy into wasm
 * instructions (without it they become calls to a memcpy no one provides).
 *
 * Or with wasi-libc (printf, strtod, malloc; the gateway's WASI subset makes
 * stdout and stderr the function's log):
 *
 *   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I functions/include \
 *     -o my_function.wasm my_function.c
 */
#ifndef EDGEFN_H
#define EDGEFN_H

#define EDGEFN_ABI_VERSION 1

#define EDGEFN_IMPORT(name) __attribute__((import_module("edgefn"), import_name(name)))
#define EDGEFN_EXPORT(name) __attribute__((export_name(name)))

/* Defines the required `edgefn_abi_version` export. Use it once, in one file. */
#define EDGEFN_ABI_VERSION_EXPORT \
    EDGEFN_EXPORT("edgefn_abi_version") int edgefn_abi_version(void) { return EDGEFN_ABI_VERSION; }

/* Log levels for edgefn_log. */
enum { EDGEFN_LOG_ERROR = 0, EDGEFN_LOG_WARN = 1, EDGEFN_LOG_INFO = 2, EDGEFN_LOG_DEBUG = 3, EDGEFN_LOG_TRACE = 4 };

/*
 * The event. Each copies its value to [buf, buf + len) when cap >= len and
 * returns len either way: call with cap = 0 to learn the size.
 */
EDGEFN_IMPORT("event_topic") int edgefn_event_topic(char *buf, int cap);
EDGEFN_IMPORT("event_payload") int edgefn_event_payload(char *buf, int cap);
EDGEFN_IMPORT("event_device") int edgefn_event_device(char *buf, int cap);
EDGEFN_IMPORT("event_trigger") int edgefn_event_trigger(char *buf, int cap);
/* When the gateway received the message, milliseconds since the Unix epoch. */
EDGEFN_IMPORT("event_time_ms") long long edgefn_event_time_ms(void);
/* What ran the function: EDGEFN_EVENT_MESSAGE (an MQTT message) or
 * EDGEFN_EVENT_TIMER (a timer trigger: no topic, no payload, and
 * edgefn_event_time_ms() is when the run was due). */
#define EDGEFN_EVENT_MESSAGE 0
#define EDGEFN_EVENT_TIMER 1
EDGEFN_IMPORT("event_kind") int edgefn_event_kind(void);

/*
 * Publishes an MQTT message once the invocation succeeds. qos 0, 1 or 2;
 * retain 0 or 1. Returns 0, or -2 when [functions.allow] does not allow the topic.
 */
EDGEFN_IMPORT("publish")
int edgefn_publish(const char *topic, int topic_len, const char *payload, int payload_len, int qos, int retain);

/*
 * Records a payload for durable upstream delivery on `stream`. Returns 0, -1 when
 * the gateway has no [upstream], -2 when [functions.allow] does not allow the stream,
 * -3 while the outbox refuses records (full, or the disk nearly full).
 */
EDGEFN_IMPORT("upstream") int edgefn_upstream(const char *stream, int stream_len, const char *payload, int payload_len);

/* Logs a line under the function's name. */
EDGEFN_IMPORT("log") void edgefn_log(int level, const char *msg, int msg_len);

/* The configuration value for `key` (the copy rule above); -1 when it is not set. */
EDGEFN_IMPORT("config_get") int edgefn_config_get(const char *key, int key_len, char *buf, int cap);

/* Wall-clock time, milliseconds since the Unix epoch. */
EDGEFN_IMPORT("now_ms") long long edgefn_now_ms(void);

#endif /* EDGEFN_H */
