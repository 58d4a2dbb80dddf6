// Builds every handler in examples/ to build/<name>.wasm with the flags the sluice ABI needs.
//   npm run build:guests (from the repository root; `npm install` there brings assemblyscript)
import asc from "assemblyscript/asc";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

// Paths below are relative to this folder, wherever the build is started from.
process.chdir(fileURLToPath(new URL(".", import.meta.url)));

const examples = readdirSync(new URL("./examples", import.meta.url)).filter((f) => f.endsWith(".ts"));
let failed = false;
for (const file of examples) {
  const name = file.replace(/\.ts$/, "");
  const { error, stderr } = await asc.main([
    `examples/${file}`,
    "--outFile", `build/${name}.wasm`,
    "--textFile", `build/${name}.wat`,
    "--optimizeLevel", "3",
    "--shrinkLevel", "0",
    "--noAssert",
    // No env.abort import: AssemblyScript runtime errors log and trap inside the module.
    "--use", "abort=sdk/index/sluiceAbort",
    // Incremental GC (the default) so long-lived instances do not leak per event.
    "--runtime", "incremental",
  ]);
  if (error) {
    console.error(`${name}: ${error.message}\n${stderr.toString()}`);
    failed = true;
  } else {
    console.log(`built build/${name}.wasm`);
  }
}
process.exit(failed ? 1 : 0);
