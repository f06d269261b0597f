/*
 * c-counter: an edgefn function in plain C, written against ABI.md alone (no
 * libc, no SDK). It counts the events its instance has handled and, every
 * `every` events (config, default 10), publishes {"events":<count>} to `topic`
 * (config, default "edgefn/c-counter/events") at QoS 0.
 *
 * The count lives in a global, so it survives from one event to the next; it
 * starts again from zero whenever the gateway instantiates the module afresh
 * (at load, and after a trap).
 */

#include "edgefn.h" /* every import, with its ABI version 1 signature */

enum { TOPIC_CAP = 256, NUMBER_CAP = 32 };

static const char DEFAULT_TOPIC[] = "edgefn/c-counter/events";
static const unsigned long long DEFAULT_EVERY = 10;

/* Events handled by this instance so far. */
static unsigned long long events;

static int length(const char *text) {
    int n = 0;
    while (text[n] != '\0') {
        n++;
    }
    return n;
}

static void log_text(int level, const char *msg) {
    edgefn_log(level, msg, length(msg));
}

/* Reads config `key` into buf; returns its length, -1 if unset, -2 if too long. */
static int config(const char *key, char *buf, int cap) {
    int len = edgefn_config_get(key, length(key), buf, cap);
    if (len > cap) {
        return -2;
    }
    return len;
}

/* Parses a positive whole number (TOML may group digits with '_'); 0 if invalid. */
static unsigned long long parse_count(const char *text, int len) {
    unsigned long long value = 0;
    int digits = 0;
    for (int i = 0; i < len; i++) {
        char c = text[i];
        if (c == '_') {
            continue;
        }
        if (c < '0' || c > '9' || value > 100000000000ULL) {
            return 0;
        }
        value = value * 10 + (unsigned long long)(c - '0');
        digits++;
    }
    return digits > 0 ? value : 0;
}

/* Appends the decimal digits of value at out; returns how many were written. */
static int write_count(char *out, unsigned long long value) {
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    for (int i = 0; i < n; i++) {
        out[i] = digits[n - 1 - i];
    }
    return n;
}

EDGEFN_EXPORT("edgefn_abi_version")
int edgefn_abi_version(void) {
    return 1;
}

EDGEFN_EXPORT("handle")
int handle(void) {
    char number[NUMBER_CAP];
    unsigned long long every = DEFAULT_EVERY;
    int len = config("every", number, NUMBER_CAP);
    if (len != -1) {
        every = len < 0 ? 0 : parse_count(number, len);
        if (every == 0) {
            log_text(EDGEFN_LOG_ERROR, "config `every` must be a whole number of at least 1");
            return 2;
        }
    }

    char topic[TOPIC_CAP];
    const char *topic_ptr = topic;
    int topic_len = config("topic", topic, TOPIC_CAP);
    if (topic_len == -1) {
        topic_ptr = DEFAULT_TOPIC;
        topic_len = length(DEFAULT_TOPIC);
    } else if (topic_len < 0) {
        log_text(EDGEFN_LOG_ERROR, "config `topic` is longer than 256 bytes");
        return 2;
    }

    events++;
    if (events % every != 0) {
        return 0;
    }

    static const char prefix[] = "{\"events\":";
    char payload[sizeof prefix + 21];
    int n = 0;
    for (; prefix[n] != '\0'; n++) {
        payload[n] = prefix[n];
    }
    n += write_count(payload + n, events);
    payload[n++] = '}';

    log_text(EDGEFN_LOG_DEBUG, "publishing the event count");
    return edgefn_publish(topic_ptr, topic_len, payload, n, 0, 0);
}
