#include <stdlib.h>
#include "edgefn.h"
EDGEFN_ABI_VERSION_EXPORT

/* Sends "ON" to `command_topic` whenever a reading's temperature exceeds `limit`. */
EDGEFN_EXPORT("handle") int handle(void) {
    char limit[32] = "", topic[128], reading[1024];
    int topic_len = edgefn_config_get("command_topic", 13, topic, sizeof topic);
    if (edgefn_config_get("limit", 5, limit, sizeof limit - 1) < 0 || topic_len < 0 || topic_len > 128) return 2;
    int len = edgefn_event_payload(reading, sizeof reading); /* copies nothing if it is longer */
    double t; /* edgefn_number_at reads nested paths too: "AM2301.Temperature" */
    if (len <= (int)sizeof reading && edgefn_number_at(reading, len, "temperature", &t) == 0
        && t > strtod(limit, NULL))
        return edgefn_publish(topic, topic_len, "ON", 2, 1, 0);
    return 0;
}
