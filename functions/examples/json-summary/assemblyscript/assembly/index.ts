// json-summary in AssemblyScript: counts and sums the numeric top-level fields
// of a JSON reading and publishes {"device":..,"fields":N,"sum":X} to config
// `topic`; says what it did with console.log, which the WASI shim writes to
// stdout and the gateway makes a log line. The same function as ../rust-std
// and ../c-wasi.

import { Level, configText, deviceId, logText, payloadText, publishText } from "../../../../include/edgefn";
export { edgefn_abi_version } from "../../../../include/edgefn";

/** Deepest nesting of arrays and objects skipped over before giving up. */
const MAX_DEPTH = 32;

/** Walks a JSON text and checks it as it goes. */
class Scanner {
  at: i32 = 0;
  constructor(public text: string) {}

  peek(): i32 {
    return this.at < this.text.length ? this.text.charCodeAt(this.at) : -1;
  }

  skipWs(): void {
    let c = this.peek();
    while (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) c = this.text.charCodeAt(++this.at);
  }

  eat(c: i32): bool {
    this.skipWs();
    if (this.peek() != c) return false;
    this.at++;
    return true;
  }

  digits(): i32 {
    let start = this.at;
    while (this.peek() >= 0x30 && this.peek() <= 0x39) this.at++;
    return this.at - start;
  }

  /** A number as JSON spells it; NaN when it is not one or too large for an f64. */
  number(): f64 {
    let start = this.at;
    if (this.peek() == 0x2d) this.at++; // -
    if (this.peek() == 0x30) this.at++; // a lone 0
    else if (this.digits() == 0) return NaN;
    if (this.peek() == 0x2e && (++this.at, this.digits() == 0)) return NaN; // .
    if ((this.peek() | 0x20) == 0x65) { // e or E
      this.at++;
      if (this.peek() == 0x2b || this.peek() == 0x2d) this.at++;
      if (this.digits() == 0) return NaN;
    }
    let value = parseFloat(this.text.substring(start, this.at));
    return isFinite(value) ? value : NaN;
  }

  string(): bool {
    if (!this.eat(0x22)) return false;
    for (let c = this.peek(); c != 0x22; c = this.peek()) {
      if (c < 0x20) return false; // the end, or a control character JSON wants escaped
      this.at++;
      if (c == 0x5c) { // a backslash escape
        let e = this.peek();
        this.at++;
        if (e == 0x75) { // \uXXXX
          for (let i = 0; i < 4; i++, this.at++) if (!isHex(this.peek())) return false;
        } else if (!"\"\\/bfnrt".includes(String.fromCharCode(e)) || e < 0) return false;
      }
    }
    this.at++;
    return true;
  }

  literal(word: string): bool {
    if (this.text.substr(this.at, word.length) != word) return false;
    this.at += word.length;
    return true;
  }

  /** Any value; compound ones are checked and skipped. NaN unless it is a number. */
  value(depth: i32): f64 {
    this.skipWs();
    let c = this.peek();
    if (c == 0x22) return this.string() ? Infinity : NaN;
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    if (c == 0x74) return this.literal("true") ? Infinity : NaN;
    if (c == 0x66) return this.literal("false") ? Infinity : NaN;
    if (c == 0x6e) return this.literal("null") ? Infinity : NaN;
    if ((c == 0x7b || c == 0x5b) && depth < MAX_DEPTH) return this.items(depth + 1, null) ? Infinity : NaN;
    return NaN;
  }

  /**
   * The fields of an object or the items of an array, from its opening bracket;
   * with `summary`, the object's numbers are counted and summed into it.
   */
  items(depth: i32, summary: Summary | null): bool {
    let close = this.peek() == 0x7b ? 0x7d : 0x5d;
    this.at++;
    if (this.eat(close)) return true;
    do {
      if (close == 0x7d && !(this.skipWs(), this.string() && this.eat(0x3a))) return false;
      this.skipWs();
      let isNumber = this.peek() == 0x2d || (this.peek() >= 0x30 && this.peek() <= 0x39);
      let value = this.value(depth);
      if (isNaN(value)) return false; // not JSON (a string, literal or nested value reads as Infinity)
      if (isNumber && summary !== null) {
        summary.fields++;
        summary.sum += value;
      }
    } while (this.eat(0x2c));
    return this.eat(close);
  }
}

class Summary {
  fields: i32 = 0;
  sum: f64 = 0;
}

function isHex(c: i32): bool {
  return (c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66);
}

/** `text` as a JSON string, quotes included. */
function quoted(text: string): string {
  let out = '"';
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c == 0x22 || c == 0x5c) out += "\\" + String.fromCharCode(c);
    else if (c < 0x20) out += "\\u00" + (c < 0x10 ? "0" : "") + c.toString(16);
    else out += String.fromCharCode(c);
  }
  return out + '"';
}

/** Reads a JSON reading; null when it is not JSON. Anything but an object sums to nothing. */
function summarise(text: string): Summary | null {
  let scan = new Scanner(text);
  let summary = new Summary();
  scan.skipWs();
  let ok = scan.peek() == 0x7b ? scan.items(0, summary) : !isNaN(scan.value(0));
  scan.skipWs();
  return ok && scan.at == text.length ? summary : null;
}

export function handle(): i32 {
  let summary = summarise(payloadText());
  if (summary === null) {
    logText(Level.Error, "not JSON");
    return 1;
  }
  let topic = configText("topic");
  if (topic === null) {
    logText(Level.Error, "config `topic`: is not set");
    return 2;
  }
  let device = deviceId();
  // A sum past the largest double is infinite: JSON has no spelling for it (null, as serde_json writes).
  let sum = isFinite(summary.sum) ? summary.sum.toString() : "null";
  let json = `{"device":${quoted(device)},"fields":${summary.fields},"sum":${sum}}`;
  if (publishText(topic, json) != 0) return 3;
  let said = isFinite(summary.sum) ? sum : summary.sum > 0 ? "inf" : "-inf";
  console.log(`${device}: ${summary.fields} numeric fields, sum ${said}`);
  return 0;
}
