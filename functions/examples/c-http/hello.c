/*
 * The serverless hello world in C, no libc: the same function as
 * examples/hello (Rust) and examples/hello-as.
 *
 *   [[functions]]
 *   name = "hello"
 *   module = "hello.wasm"
 *   triggers = [{ http = "GET /hello" }]
 *
 * GET /hello?name=Ada answers 200 {"message":"Hello, Ada!"}; without a name,
 * 400 {"error":"give a name: /hello?name=Ada"}.
 */
#include "edgefn.h"

EDGEFN_ABI_VERSION_EXPORT

/* Appends `text` to out at *at, as the inside of a JSON string; 0 when it did not fit. */
static int put_json(char *out, int *at, int cap, const char *text, int len) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        char esc[6] = {'\\', (char)c, 0, 0, 0, 0};
        int n = 1;
        if (c == '"' || c == '\\') n = 2;
        else if (c < 0x20) {
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0'; esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            n = 6;
        }
        const char *from = n == 1 ? (const char *)&text[i] : esc;
        if (*at + n > cap) return 0;
        for (int k = 0; k < n; k++) out[(*at)++] = from[k];
    }
    return 1;
}

static int put(char *out, int *at, int cap, const char *text) {
    for (; *text; text++) {
        if (*at >= cap) return 0;
        out[(*at)++] = *text;
    }
    return 1;
}

EDGEFN_EXPORT("handle") int handle(void) {
    char query[256], body[320];
    int len = edgefn_http_query(query, sizeof query);
    if (len > (int)sizeof query) len = 0; /* too long to hold: no name read */
    /* The value of `name` among the parameters, left as it came (no percent-decoding). */
    const char *name = 0;
    int name_len = 0;
    for (int start = 0; start < len;) {
        int end = start;
        while (end < len && query[end] != '&') end++;
        if (end - start > 5 && query[start] == 'n' && query[start + 1] == 'a' && query[start + 2] == 'm'
            && query[start + 3] == 'e' && query[start + 4] == '=') {
            name = query + start + 5;
            name_len = end - start - 5;
            break;
        }
        start = end + 1;
    }
    int at = 0;
    if (!name) {
        put(body, &at, sizeof body, "{\"error\":\"give a name: /hello?name=Ada\"}");
        return edgefn_http_respond(400, "application/json", 16, body, at) == 0 ? 0 : 1;
    }
    if (!(put(body, &at, sizeof body, "{\"message\":\"Hello, ") && put_json(body, &at, sizeof body, name, name_len)
          && put(body, &at, sizeof body, "!\"}"))) {
        at = 0;
        put(body, &at, sizeof body, "{\"error\":\"the name is too long\"}");
        return edgefn_http_respond(400, "application/json", 16, body, at) == 0 ? 0 : 1;
    }
    return edgefn_http_respond(200, "application/json", 16, body, at) == 0 ? 0 : 1;
}
