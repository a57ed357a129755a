// Invoke an OpenWhisk action with Apache's JavaScript client (the `openwhisk` npm package).
// Usage: node ow_invoke.js NAME 'JSON params'   (apihost and key from __OW_API_HOST and
// __OW_API_KEY, never from the command line). Prints one JSON line:
//   {"ok": true, "result": {...}}  or  {"ok": false, "status": 502, "error": {...}}
const openwhisk = require("openwhisk");

async function main() {
  const [name, params] = process.argv.slice(2);
  const ow = openwhisk({ apihost: process.env.__OW_API_HOST, api_key: process.env.__OW_API_KEY,
                         ignore_certs: true });
  try {
    const result = await ow.actions.invoke({ name, params: JSON.parse(params || "{}"),
                                             blocking: true, result: true });
    console.log(JSON.stringify({ ok: true, result }));
  } catch (err) {
    // An application error arrives as 502 with the activation in err.error.
    const activation = err.error || {};
    const result = activation.response ? activation.response.result : activation;
    console.log(JSON.stringify({ ok: false, status: err.statusCode || null, error: result }));
  }
}

main();
