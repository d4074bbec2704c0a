// Builds echo.js into a component: node build.mjs <wit dir> <output.wasm>
// (`cargo xtask polyglot` runs it with the repository's wit/ and
// target/polyglot/js-echo.wasm).
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const [witPath = '../../wit', out = 'js-echo.wasm'] = process.argv.slice(2);
const here = fileURLToPath(new URL('.', import.meta.url));
const sourcePath = `${here}echo.js`;

const { component } = await componentize({
  sourcePath,
  source: await readFile(sourcePath, 'utf8'),
  witPath,
  worldName: 'plugin',
});
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
