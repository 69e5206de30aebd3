// Runs a bench worker (tickbench.py) under a 32-bit MicroPython: the webassembly port, from
// npm (@micropython/micropython-webassembly-pyscript, a dev-only tool the Makefile installs
// into .node/).  Most routers run a 32-bit MicroPython, where an int past 2**30 is a heap
// object; this machine has no 32-bit unix build, and this port shares its core and its object
// layout.
//
//   node bench/mp32.mjs PACKAGE_DIR WORKER.py SPEC.json
//
// The port sees only an in-memory file system, so the worker's directory, tunmon's modules and
// every file the spec names are copied into it at the same paths first.  The worker's stdout
// comes out on stdout; a Python error ends in exit status 1.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [packageDir, worker, specPath] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(path.join(packageDir, "micropython.mjs")));
const mp = await loadMicroPython({
  heapsize: 16 * 1024 * 1024,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function copyIn(file) {
  const parts = path.dirname(file).split("/").filter((part) => part);
  let dir = "";
  for (const part of parts) {
    dir += "/" + part;
    if (!mp.FS.analyzePath(dir).exists) mp.FS.mkdir(dir);
  }
  mp.FS.writeFile(file, fs.readFileSync(file));
}

const spec = JSON.parse(fs.readFileSync(specPath, "utf8"));
const files = new Set([specPath]);
for (const dir of [path.dirname(worker), spec.src]) {
  for (const name of fs.readdirSync(dir)) {
    if (name.endsWith(".py")) files.add(path.join(dir, name));
  }
}
(function named(value) {
  if (typeof value === "string") {
    if (value.startsWith("/") && fs.existsSync(value) && fs.statSync(value).isFile()) files.add(value);
  } else if (value && typeof value === "object") {
    Object.values(value).forEach(named);
  }
})(spec);
files.forEach(copyIn);

try {
  mp.runPython(`
import os
if not hasattr(os, "getenv"):       # this port's os lacks it; tunmon reads one variable
    os.getenv = lambda name, default=None: default
import sys
sys.path.insert(0, ${JSON.stringify(path.dirname(worker))})
import tickbench
tickbench.main(["tickbench.py", ${JSON.stringify(specPath)}])
`);
} catch (err) {
  process.stderr.write(String(err).split("\n").slice(-3).join("\n") + "\n");
  process.exit(1);
}
