#!/usr/bin/env node
// Run the Khronos glTF-Validator on one .glb/.gltf (external buffers and images are read beside it).
// Prints one summary line, `errors=N warnings=N infos=N animations=N meshes=N morph=true|false`,
// then up to five error messages; exits 0 when the asset has no errors, 1 when it has, 2 when the
// validator could not run. With --json it prints instead every error as one JSON line
// ({"code", "message", "pointer"}) after the summary, for tests that must tell errors apart.
// Used by the export tests; run `npm ci --prefix scripts/node` once.
'use strict';
const fs = require('fs');
const path = require('path');
const { validateBytes } = require('gltf-validator');

const json = process.argv.includes('--json');
const file = process.argv.slice(2).find((arg) => arg !== '--json');
if (!file) {
  console.error('usage: node scripts/node/validate_gltf.js [--json] FILE.glb|FILE.gltf');
  process.exit(2);
}
const readBeside = (uri) => fs.promises
  .readFile(path.resolve(path.dirname(file), decodeURIComponent(uri)))
  .then((data) => new Uint8Array(data));

validateBytes(new Uint8Array(fs.readFileSync(file)), { uri: path.basename(file), externalResourceFunction: readBeside })
  .then((report) => {
    const { issues, info } = report;
    const fact = (key) => (info ? info[key] : '?');
    console.log(`errors=${issues.numErrors} warnings=${issues.numWarnings} infos=${issues.numInfos} `
      + `animations=${fact('animationCount')} meshes=${fact('meshCount')} morph=${fact('hasMorphTargets')}`);
    const errors = issues.messages.filter((m) => m.severity === 0);
    if (json) errors.forEach((m) => console.log(JSON.stringify({ code: m.code, message: m.message, pointer: m.pointer || '' })));
    else errors.slice(0, 5).forEach((m) => console.log(`  ${m.code}: ${m.message} @ ${m.pointer || ''}`));
    process.exit(issues.numErrors > 0 ? 1 : 0);
  })
  .catch((err) => {
    console.error(`the validator failed: ${err}`);
    process.exit(2);
  });
