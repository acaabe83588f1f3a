// Runs one measuring step of tools/heap32/heapsteps.py in a 32-bit MicroPython: the
// webassembly port from npm (package.json pins it), whose small ints and pointers are those
// of the ESP32 and RP2040 boards.
//
//   node tools/heap32/run.mjs [--heap 100k] [--fixed] DIR... -- STEP ARG...
//
// Every DIR is copied into the port's filesystem root (its VFS is Emscripten's in-memory
// one), so `import ubroker` finds DIR/ubroker/*.mpy. STEP names a generator function of
// heapsteps (or MODULE.FUNCTION, of that module); every value it yields is printed as a
// line, and between two of its parts the
// garbage is collected: this port only marks a collection as wanted when gc.collect() is
// called, and makes it when control is back at the top level, here.
//
// --heap is the size of the GC heap at start. The port grows the heap by adding areas taken
// from the C heap when it is full (MICROPY_GC_SPLIT_HEAP_AUTO); --fixed stops that, so the
// heap is the given size and no more, as on a board: the wasm memory may no longer grow and
// the C heap is filled, leaving only fragments far smaller than the area the port would add.

import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PORT = "@micropython/micropython-webassembly-pyscript";

// server.py imports socket at the top; the paths measured here never call it, and the port
// has no socket module.
const SOCKET_STUB = "# tools/heap32/run.mjs: the webassembly port has no sockets\n";

function size(text) {
  const m = /^(\d+)([kKmM]?)$/.exec(text);
  if (!m) throw new Error("--heap: a size such as 100k or 4M, not " + text);
  return Number(m[1]) * { "": 1, k: 1024, m: 1 << 20 }[m[2].toLowerCase()];
}

function parse(argv) {
  const opts = { heap: 4 << 20, fixed: false, dirs: [], step: null, args: [] };
  let i = 0;
  for (; i < argv.length && argv[i] !== "--"; i++) {
    if (argv[i] === "--heap") opts.heap = size(argv[++i]);
    else if (argv[i] === "--fixed") opts.fixed = true;
    else opts.dirs.push(argv[i]);
  }
  [opts.step, ...opts.args] = argv.slice(i + 1);
  if (!opts.step) throw new Error("usage: run.mjs [--heap SIZE] [--fixed] DIR... -- STEP ARG...");
  return opts;
}

// The growth of the wasm memory goes through this one import; it is wrapped before the
// module is instantiated, to be refused once the heap is fixed.
let growthRefused = false;
const instantiate = WebAssembly.instantiate;
WebAssembly.instantiate = function (binary, imports) {
  const env = imports && imports.env;
  if (env && typeof env.emscripten_resize_heap === "function") {
    const resize = env.emscripten_resize_heap;
    env.emscripten_resize_heap = (n) => (growthRefused ? 0 : resize(n));
  }
  return instantiate.call(this, binary, imports);
};

function fixHeap(module) {
  growthRefused = true;
  // Take every block of 16 kB or more: a new GC area is at least as large as the heap so far
  // (gc_try_add_heap doubles it), so none can be added; the smaller fragments left serve the
  // few bytes the JS glue mallocs per call.
  let kept = 0;
  for (let n = 1 << 24; n >= 16384; ) {
    if (module._malloc(n)) kept += n;
    else n >>= 1;
  }
  return kept;
}

function copyTree(FS, src, dst) {
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const from = path.join(src, e.name);
    const to = dst + "/" + e.name;
    if (e.isDirectory()) {
      try {
        FS.mkdir(to);
      } catch (err) {
        // already there from an earlier DIR
      }
      copyTree(FS, from, to);
    } else {
      FS.writeFile(to, fs.readFileSync(from));
    }
  }
}

async function main() {
  const opts = parse(process.argv.slice(2));
  const { loadMicroPython } = await import(path.join(HERE, "node_modules", PORT, "micropython.mjs"));
  const mp = await loadMicroPython({
    heapsize: opts.heap,
    pystack: 16384, // words; Python frames live there on this port, not in the GC heap
    linebuffer: false,
    stdout: (bytes) => process.stdout.write(bytes),
    stderr: (bytes) => process.stderr.write(bytes),
  });
  for (const d of opts.dirs) copyTree(mp.FS, d, "");
  mp.FS.writeFile("/socket.py", SOCKET_STUB);
  if (opts.fixed) fixHeap(mp._module);
  try {
    // STEP may be MODULE.FUNCTION, a step kept in a module of its own (heapsteps_v5.py)
    const dot = opts.step.lastIndexOf(".");
    const args = opts.args.map((a) => JSON.stringify(a)).join(", ");
    mp.runPython(
      dot < 0
        ? "import heapsteps\nheapsteps.begin(" + [JSON.stringify(opts.step), args].filter((a) => a).join(", ") + ")\n"
        : "import heapsteps\nimport " + opts.step.slice(0, dot) + " as m\nheapsteps._gen = m." +
            opts.step.slice(dot + 1) + "(" + args + ")\ndel m\n"
    );
    const step = mp.pyimport("heapsteps").step;
    for (;;) {
      const line = step();
      if (line === null || line === undefined) break;
      if (line !== "") process.stdout.write(line + "\n");
    }
  } catch (err) {
    if (err.name !== "PythonError") throw err;
    process.stderr.write(err.message);
    process.exitCode = 1;
  }
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exitCode = 2;
});
