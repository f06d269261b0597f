#include <stdlib.h>
#include <string.h>
#include "edgefn.h"
EDGEFN_ABI_VERSION_EXPORT

/* Sends "ON" to `command_topic` whenever a reading's temperature exceeds `limit`. */
EDGEFN_EXPORT("handle") int handle(void) {
    char limit[32] = "", topic[128], reading[1024] = "";
    int topic_len = edgefn_config_get("command_topic", 13, topic, sizeof topic);
    if (edgefn_config_get("limit", 5, limit, sizeof limit - 1) < 0 || topic_len < 0 || topic_len > 128) return 2;
    edgefn_event_payload(reading, sizeof reading - 1); /* copies nothing if it is longer */
    const char *t = strstr(reading, "\"temperature\":"); /* a real parser: examples/json-summary/c-wasi */
    if (t && strtod(t + 14, NULL) > strtod(limit, NULL)) return edgefn_publish(topic, topic_len, "ON", 2, 1, 0);
    return 0;
}
