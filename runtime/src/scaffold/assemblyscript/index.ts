import { configText, payloadText, publishText } from "./edgefn";
export { edgefn_abi_version } from "./edgefn";

/** Sends "ON" to `command_topic` whenever a reading's temperature exceeds `limit`. */
export function handle(): i32 {
  const limit = configText("limit"), topic = configText("command_topic");
  if (limit === null || topic === null) return 2;
  const reading = payloadText();
  const at = reading.indexOf('"temperature":'); // a real parser: examples/json-summary/assemblyscript
  if (at >= 0 && parseFloat(reading.substr(at + 14)) > parseFloat(limit)) return publishText(topic, "ON", 1);
  return 0;
}
