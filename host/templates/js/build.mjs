// Builds {{name}}.wasm from step.js with componentize-js: `npm run build`.
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';

const sourcePath = resolve('step.js');
const { component } = await componentize({
  sourcePath,
  source: await readFile(sourcePath, 'utf8'),
  witPath: resolve('wit'),
  worldName: 'observing-plugin',
});
await writeFile('{{name}}.wasm', component);
console.log(`built {{name}}.wasm (${component.length} bytes)`);
