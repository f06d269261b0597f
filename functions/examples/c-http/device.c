/*
 * A device's last reading over HTTP, in C with no libc: every field its
 * profile has read from it since the gateway started, as JSON.
 *
 *   [[functions]]
 *   name = "device-api"
 *   module = "device.wasm"
 *   triggers = [{ http = "GET /devices/{device}" }]
 *   [functions.allow]
 *   read_devices = ["greenhouse-climate"]   # the devices it may show (default: any)
 *
 * GET /devices/greenhouse-climate answers 200
 * {"device":"greenhouse-climate","values":{"humidity":58.2,"temperature":24.1}};
 * 404 when nothing was read from it yet, 403 when it is not this function's to show.
 */
#include "edgefn.h"

EDGEFN_ABI_VERSION_EXPORT

static char values[16384], body[16640];

static int put(char *out, int *at, int cap, const char *text, int len) {
    if (*at + len > cap) return 0;
    for (int i = 0; i < len; i++) out[(*at)++] = text[i];
    return 1;
}

static int put_str(char *out, int *at, int cap, const char *text) {
    int len = 0;
    while (text[len]) len++;
    return put(out, at, cap, text, len);
}

static int answer(int status, const char *text) {
    int at = 0;
    put_str(body, &at, sizeof body, text);
    return edgefn_http_respond(status, "application/json", 16, body, at) == 0 ? 0 : 1;
}

EDGEFN_EXPORT("handle") int handle(void) {
    char device[128];
    int device_len = edgefn_http_param("device", 6, device, sizeof device);
    if (device_len < 0 || device_len > (int)sizeof device) return answer(400, "{\"error\":\"no such device id\"}");
    /* Ids hold no quote or backslash: [[devices]] ids are checked at load. */
    for (int i = 0; i < device_len; i++)
        if (device[i] == '"' || device[i] == '\\' || (unsigned char)device[i] < 0x20)
            return answer(400, "{\"error\":\"no such device id\"}");
    int len = edgefn_device_reading(device, device_len, values, sizeof values);
    if (len == -2) return answer(403, "{\"error\":\"this device is not this function's to show\"}");
    if (len < 0) return answer(404, "{\"error\":\"nothing read from this device yet\"}");
    if (len > (int)sizeof values) return answer(500, "{\"error\":\"its values are larger than this function holds\"}");
    int at = 0;
    put_str(body, &at, sizeof body, "{\"device\":\"");
    put(body, &at, sizeof body, device, device_len);
    put_str(body, &at, sizeof body, "\",\"values\":");
    put(body, &at, sizeof body, values, len);
    put_str(body, &at, sizeof body, "}");
    return edgefn_http_respond(200, "application/json", 16, body, at) == 0 ? 0 : 1;
}
