// The nodejs:20 launcher of owdedup serve: what the Node.js runtime's /init and /run do for
// one action, over the same line protocol as the Python launcher (launcher.py).
//
//   node launcher.js CODE_DIR ENTRY --reply-fd N
//
// CODE_DIR holds index.js (an action created from source) or an unpacked zip (its
// package.json "main", else index.js). Source is evaluated as the runtime evaluates it, so
// a top-level `function main(params)` needs no export; a module's exports[ENTRY] also works.
// Per request line {"value": params, "<key>": ...}: every key but value becomes
// process.env.__OW_<KEY>, main(params) runs (it may return a Promise), an exception or a
// rejection becomes {"error": message} with the stack on stderr, and the result goes out as
// one JSON line on the reply descriptor. stdout and stderr are the activation's logs.
'use strict';
const fs = require('fs');
const path = require('path');
const readline = require('readline');

const [codeDir, entry, flag, replyFdText] = process.argv.slice(2);
if (flag !== '--reply-fd') {
  process.stderr.write('launcher.js: usage: CODE_DIR ENTRY --reply-fd N\n');
  process.exit(2);
}
const replyFd = Number(replyFdText);

function loadMain() {
  const index = path.join(codeDir, 'index.js');
  const names = fs.readdirSync(codeDir);
  if (!(names.length === 1 && names[0] === 'index.js')) {  // a zip: a module folder
    const exported = require(codeDir);
    return typeof exported[entry] === 'function' ? exported[entry] : null;
  }
  const source = fs.readFileSync(index, 'utf8');
  const module = { exports: {} };
  const scoped = new Function('exports', 'require', 'module', '__filename', '__dirname',
    `${source}\n;return typeof ${entry} === 'function' ? ${entry} : module.exports[${JSON.stringify(entry)}];`);
  const found = scoped(module.exports, require, module, index, codeDir);
  return typeof found === 'function' ? found : null;
}

function reply(result) {
  fs.writeSync(replyFd, JSON.stringify(result) + '\n');
}

let main;
try {
  if (!/^[A-Za-z_$][\w$]*$/.test(entry)) throw new Error(`invalid main function name: ${entry}`);
  main = loadMain();
  if (main === null) throw new Error(`the action has no function ${entry}`);
} catch (err) {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
}
if (process.env.__OW_WAIT_FOR_ACK) reply({ ok: true });

const lines = readline.createInterface({ input: process.stdin, terminal: false });
const queue = [];
let running = false;

async function runNext() {
  if (running || queue.length === 0) return;
  running = true;
  const request = JSON.parse(queue.shift());
  let params = {};
  for (const [key, value] of Object.entries(request)) {
    if (key === 'value') params = value;
    else process.env[`__OW_${key.toUpperCase()}`] = typeof value === 'string' ? value : JSON.stringify(value);
  }
  let result;
  try {
    result = await main(params);
  } catch (err) {
    process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
    result = { error: err && err.message ? err.message : String(err) };
  }
  reply(result === undefined ? null : result);
  running = false;
  runNext();
}

lines.on('line', (line) => { queue.push(line); runNext(); });
lines.on('close', () => { if (!running && queue.length === 0) process.exit(0); });
