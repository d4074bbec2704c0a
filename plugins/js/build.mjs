// Builds a step written in JavaScript into a component:
//   node build.mjs <wit dir> <source.js> <output.wasm>
// (`cargo xtask polyglot` runs it for each example with the contract it is
// written against, wit/ for 0.1.0 or wit/0.2.0/, writing into
// target/polyglot/).
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';

const [witPath = '../../wit', source = 'echo.js', out = 'js-echo.wasm'] = process.argv.slice(2);
const sourcePath = resolve(source);

const { component } = await componentize({
  sourcePath,
  source: await readFile(sourcePath, 'utf8'),
  witPath,
  worldName: 'plugin',
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
