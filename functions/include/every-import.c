/* Calls every import edgefn.h declares, so that CI can check the header's
 * signatures against the ABI (scripts/check-abi.py on the built module). */
#include "edgefn.h"

EDGEFN_ABI_VERSION_EXPORT

static char buf[64];

EDGEFN_EXPORT("handle")
int handle(void) {
    int n = edgefn_event_topic(buf, sizeof buf) + edgefn_event_payload(buf, sizeof buf) +
            edgefn_event_device(buf, sizeof buf) + edgefn_event_trigger(buf, sizeof buf);
    long long t = edgefn_event_time_ms() + edgefn_now_ms() + edgefn_event_kind();
    edgefn_log(EDGEFN_LOG_INFO, buf, n > 0 ? 1 : 0);
    n += edgefn_config_get("k", 1, buf, sizeof buf);
    n += edgefn_publish("t", 1, buf, 1, 0, 0);
    n += edgefn_upstream("s", 1, buf, 1);
    n += edgefn_http_method(buf, sizeof buf) + edgefn_http_query(buf, sizeof buf);
    n += edgefn_http_param("p", 1, buf, sizeof buf);
    n += edgefn_http_respond(200, "text/plain", 10, buf, 1);
    return (int)(t & 0) + (n & 0);
}
