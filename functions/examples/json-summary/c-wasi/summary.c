/*
 * json-summary in C with wasi-libc: counts and sums the numeric top-level
 * fields of a JSON reading and publishes {"device":..,"fields":N,"sum":X} to
 * config `topic`; says what it did with printf, which the gateway's WASI
 * subset turns into a log line. The same function as ../rust-std and
 * ../assemblyscript.
 *
 * libc brings malloc, strtod and printf; the event and publishing come from
 * the edgefn imports (edgefn.h).
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefn.h"

EDGEFN_ABI_VERSION_EXPORT

/* Deepest nesting of arrays and objects skipped over before giving up. */
enum { MAX_DEPTH = 32 };

/* A cursor over a NUL-terminated JSON text that validates as it skips. */
struct cursor {
    const char *at;
};

static void skip_ws(struct cursor *c) {
    while (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r') {
        c->at++;
    }
}

static int is_digit(char ch) {
    return ch >= '0' && ch <= '9';
}

static int is_hex(char ch) {
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* A string, escapes checked; 0 when it is not one. */
static int string(struct cursor *c) {
    if (*c->at != '"') {
        return 0;
    }
    for (c->at++;; c->at++) {
        unsigned char ch = (unsigned char)*c->at;
        if (ch == '"') {
            c->at++;
            return 1;
        }
        if (ch < 0x20) { /* the end of the text, or a control character JSON wants escaped */
            return 0;
        }
        if (ch == '\\') {
            c->at++;
            if (*c->at == 'u') {
                for (int i = 1; i <= 4; i++) {
                    if (!is_hex(c->at[i])) {
                        return 0;
                    }
                }
                c->at += 4;
            } else if (*c->at == '\0' || !strchr("\"\\/bfnrt", *c->at)) {
                return 0;
            }
        }
    }
}

/* A number as JSON spells it, its value read by strtod; 0 when it is not one or
 * is too large for a double. */
static int number(struct cursor *c, double *value) {
    const char *start = c->at;
    const char *p = c->at;
    if (*p == '-') {
        p++;
    }
    if (*p == '0') {
        p++;
    } else if (is_digit(*p)) {
        while (is_digit(*p)) p++;
    } else {
        return 0;
    }
    if (*p == '.') {
        if (!is_digit(*++p)) return 0;
        while (is_digit(*p)) p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!is_digit(*p)) return 0;
        while (is_digit(*p)) p++;
    }
    *value = strtod(start, NULL);
    c->at = p;
    return isfinite(*value);
}

static int literal(struct cursor *c, const char *word) {
    size_t n = strlen(word);
    if (strncmp(c->at, word, n) != 0) {
        return 0;
    }
    c->at += n;
    return 1;
}

static int value(struct cursor *c, int depth, int *is_number, double *number_value);

/* The items of an array or the fields of an object, after its opening bracket. */
static int items(struct cursor *c, int depth, char close, int *fields, double *sum) {
    skip_ws(c);
    if (*c->at == close) {
        c->at++;
        return 1;
    }
    for (;;) {
        skip_ws(c);
        if (close == '}') {
            if (!string(c)) return 0;
            skip_ws(c);
            if (*c->at++ != ':') return 0;
        }
        int is_number = 0;
        double item = 0;
        if (!value(c, depth + 1, &is_number, &item)) return 0;
        if (is_number && fields) {
            *fields += 1;
            *sum += item;
        }
        skip_ws(c);
        if (*c->at == ',') {
            c->at++;
        } else if (*c->at == close) {
            c->at++;
            return 1;
        } else {
            return 0;
        }
    }
}

static int value(struct cursor *c, int depth, int *is_number, double *number_value) {
    skip_ws(c);
    switch (*c->at) {
    case '"':
        return string(c);
    case '{':
    case '[':
        if (depth > MAX_DEPTH) return 0;
        c->at++;
        return items(c, depth, c->at[-1] == '{' ? '}' : ']', NULL, NULL);
    case 't':
        return literal(c, "true");
    case 'f':
        return literal(c, "false");
    case 'n':
        return literal(c, "null");
    default:
        *is_number = number(c, number_value);
        return *is_number;
    }
}

/* Counts and sums the numeric fields of `text`; 0 when it is not JSON. */
static int summarise(const char *text, int *fields, double *sum) {
    struct cursor c = {text};
    skip_ws(&c);
    int ok;
    if (*c.at == '{') {
        c.at++;
        ok = items(&c, 0, '}', fields, sum);
    } else {
        int is_number = 0;
        double ignored = 0;
        ok = value(&c, 0, &is_number, &ignored);
    }
    skip_ws(&c);
    return ok && *c.at == '\0';
}

/* The shortest %g spelling that reads back as `x`. */
static void shortest(char *out, size_t cap, double x) {
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(out, cap, "%.*g", precision, x);
        if (strtod(out, NULL) == x) {
            return;
        }
    }
}

/* `text` as the contents of a JSON string: quotes, backslashes and control characters escaped. */
static void escape(char *out, size_t cap, const char *text) {
    size_t n = 0;
    for (; *text != '\0' && n + 7 < cap; text++) {
        unsigned char ch = (unsigned char)*text;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    out[n] = '\0';
}

static void log_error(const char *message) {
    edgefn_log(EDGEFN_LOG_ERROR, message, (int)strlen(message));
}

EDGEFN_EXPORT("handle")
int handle(void) {
    int len = edgefn_event_payload(NULL, 0);
    char *payload = malloc((size_t)len + 1);
    if (payload == NULL) {
        log_error("out of memory for the payload");
        return 2;
    }
    edgefn_event_payload(payload, len);
    payload[len] = '\0';
    int fields = 0;
    double sum = 0;
    /* An embedded NUL ends the text early, and then it is not JSON either. */
    int ok = summarise(payload, &fields, &sum) && strlen(payload) == (size_t)len;
    free(payload);
    if (!ok) {
        log_error("not JSON");
        return 2;
    }

    char device[128];
    int device_len = edgefn_event_device(device, sizeof device - 1);
    device[device_len < (int)sizeof device ? device_len : 0] = '\0';
    char topic[256];
    int topic_len = edgefn_config_get("topic", 5, topic, sizeof topic);
    if (topic_len < 0 || topic_len > (int)sizeof topic) {
        log_error("config `topic`: is not set");
        return 2;
    }

    /* A sum past the largest double is infinite: JSON has no spelling for it (null, as serde_json writes). */
    char number_text[32];
    shortest(number_text, sizeof number_text, sum);
    const char *sum_json = isfinite(sum) ? number_text : "null";
    char device_json[sizeof device * 6];
    escape(device_json, sizeof device_json, device);
    char summary[sizeof device_json + 96];
    int n = snprintf(summary, sizeof summary, "{\"device\":\"%s\",\"fields\":%d,\"sum\":%s}", device_json, fields,
                     sum_json);
    if (edgefn_publish(topic, topic_len, summary, n, 0, 0) != 0) {
        log_error("publishing the summary was refused");
        return 3;
    }
    printf("%s: %d numeric fields, sum %s\n", device, fields, number_text);
    return 0;
}
