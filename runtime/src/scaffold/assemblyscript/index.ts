import { configText, numberAt, payloadText, publishText } from "./edgefn";
export { edgefn_abi_version } from "./edgefn";

/** Sends "ON" to `command_topic` whenever a reading's temperature exceeds `limit`. */
export function handle(): i32 {
  const limit = configText("limit"), topic = configText("command_topic");
  if (limit === null || topic === null) return 2;
  const t = numberAt(payloadText(), "temperature"); // nested too: "AM2301.Temperature"
  if (!isNaN(t) && t > parseFloat(limit)) return publishText(topic, "ON", 1);
  return 0;
}
