/*
 * A reading by path, in plain C with no libc: the number at `path` in the
 * payload, whatever its size and nesting, published as
 * {"device":"<topic level>","value":N} to `topic`.
 *
 *   [[functions]]
 *   name = "climate-c"
 *   module = "reading.wasm"
 *   triggers = ["tele/+/SENSOR"]
 *   [functions.config]
 *   path = "AM2301.Temperature"   # Tasmota; "temperature:0.tC" (Shelly), "" (ESPHome), ...
 *   level = 1                     # the topic level naming the device (tele/<device>/SENSOR)
 *   topic = "readings/c"
 *
 * Built by build.sh; tests/cli.rs runs it on each project's payloads.
 */
#include "edgefn.h"

EDGEFN_ABI_VERSION_EXPORT

static char path[128], topic[128], level_text[8];

/* A configuration value into buf as a C string; its length, or -1 when not set. */
static int config(const char *key, int key_len, char *buf, int cap) {
    int n = edgefn_config_get(key, key_len, buf, cap - 1);
    if (n < 0 || n >= cap) return -1;
    buf[n] = 0;
    return n;
}

/* Appends `text` to out at *at (within cap). */
static void put(char *out, int *at, int cap, const char *text, int len) {
    for (int i = 0; i < len && *at < cap; i++) out[(*at)++] = text[i];
}

/* `v` with three decimals (telemetry needs no more). */
static void put_number(char *out, int *at, int cap, double v) {
    char digits[24];
    int n = 0;
    if (v < 0) { put(out, at, cap, "-", 1); v = -v; }
    unsigned long long milli = (unsigned long long)(v * 1000 + 0.5), whole = milli / 1000;
    do { digits[n++] = (char)('0' + whole % 10); whole /= 10; } while (whole && n < 20);
    while (n) put(out, at, cap, &digits[--n], 1);
    char frac[4] = {'.', (char)('0' + milli / 100 % 10), (char)('0' + milli / 10 % 10), (char)('0' + milli % 10)};
    int keep = 4;
    while (keep > 1 && frac[keep - 1] == '0') keep--;
    if (keep > 1) put(out, at, cap, frac, keep);
}

EDGEFN_EXPORT("handle") int handle(void) {
    int path_len = config("path", 4, path, sizeof path);
    int topic_len = config("topic", 5, topic, sizeof topic);
    if (path_len < 0 || topic_len <= 0) {
        edgefn_log(0, "set `path` and `topic`", 22);
        return 1;
    }
    int level = 1;
    if (config("level", 5, level_text, sizeof level_text) > 0) {
        level = 0;
        for (char *c = level_text; *c >= '0' && *c <= '9'; c++) level = level * 10 + (*c - '0');
    }
    char event_topic[256];
    int event_topic_len = edgefn_event_topic(event_topic, sizeof event_topic);
    const char *device = "";
    int device_len = event_topic_len <= (int)sizeof event_topic
        ? edgefn_topic_level(event_topic, event_topic_len, level, &device) : -1;
    int len;
    const char *payload = edgefn_payload_whole(&len);
    double value;
    if (!payload || device_len < 0 || edgefn_number_at(payload, len, path, &value) != 0) {
        edgefn_log(1, "no number at the path, or no such topic level: skipped", 54);
        return 0;
    }
    char out[256];
    int at = 0;
    put(out, &at, sizeof out, "{\"device\":\"", 11);
    put(out, &at, sizeof out, device, device_len);
    put(out, &at, sizeof out, "\",\"value\":", 10);
    put_number(out, &at, sizeof out, value);
    put(out, &at, sizeof out, "}", 1);
    return edgefn_publish(topic, topic_len, out, at, 1, 0) == 0 ? 0 : 1;
}
