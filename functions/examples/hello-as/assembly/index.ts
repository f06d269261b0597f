// The serverless hello world in AssemblyScript: the same function as
// examples/hello (Rust) and examples/c-http/hello.c.
//
//   [[functions]]
//   name = "hello"
//   module = "hello.wasm"
//   triggers = [{ http = "GET /hello" }]
//
// GET /hello?name=Ada answers 200 {"message":"Hello, Ada!"}; without a name,
// 400 {"error":"give a name: /hello?name=Ada"}.

import { queryText, respondText } from "../../../include/edgefn";
export { edgefn_abi_version } from "../../../include/edgefn";

/** `text` as the inside of a JSON string. */
function escaped(text: string): string {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c == 0x22 || c == 0x5c) out += "\\" + String.fromCharCode(c);
    else if (c < 0x20) out += "\\u00" + (c < 0x10 ? "0" : "") + c.toString(16);
    else out += String.fromCharCode(c);
  }
  return out;
}

export function handle(): i32 {
  const pairs = queryText().split("&");
  for (let i = 0; i < pairs.length; i++) {
    // The value left as it came (no percent-decoding), as the Rust one does.
    if (pairs[i].startsWith("name=") && pairs[i].length > 5) {
      const body = '{"message":"Hello, ' + escaped(pairs[i].substring(5)) + '!"}';
      return respondText(200, "application/json", body);
    }
  }
  return respondText(400, "application/json", '{"error":"give a name: /hello?name=Ada"}');
}
