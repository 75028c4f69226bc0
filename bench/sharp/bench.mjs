// sharp (libvips) doing the benchmark's job on the benchmark's photos, one at a time on
// one libvips thread, so its figure is per core like imgfleet's.
//
//   node bench.mjs --dir <photos> --width 300 --format jpeg --quality 80 --rounds 3
//
// Prints one JSON object: { images, seconds, images_per_second, median_ms, versions }.
//
// With --serve it does one photo at a time when asked, for a benchmark that takes turns
// between engines photo by photo: it prints { versions } once, then reads photo file names
// from stdin, one per line, and answers each with the milliseconds its job took.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { resizeJob } from "./job.mjs";

const { values } = parseArgs({
  options: {
    dir: { type: "string" },
    width: { type: "string", default: "300" },
    format: { type: "string", default: "jpeg" },
    quality: { type: "string", default: "80" },
    rounds: { type: "string", default: "3" },
    serve: { type: "boolean", default: false },
  },
});
if (!values.dir) {
  console.error("--dir is required");
  process.exit(2);
}
// One worker thread, and no operation cache: every round must do the whole job again.
sharp.concurrency(1);
sharp.cache(false);

const names = readdirSync(values.dir)
  .filter((f) => f.endsWith(".jpg"))
  .sort();
const byName = new Map(names.map((f) => [f, readFileSync(join(values.dir, f))]));
const photos = names.map((f) => byName.get(f));
const width = Number(values.width);
const quality = Number(values.quality);
const rounds = Number(values.rounds);

function job(input) {
  return resizeJob(input, { width, format: values.format, quality });
}

// Warm-up: the first call loads codecs.
await job(photos[0]);
const versions = { sharp: sharp.versions.sharp, vips: sharp.versions.vips };

if (values.serve) {
  console.log(JSON.stringify({ versions }));
  for await (const name of createInterface({ input: process.stdin })) {
    const input = byName.get(name);
    if (!input) {
      console.log(JSON.stringify({ error: `no photo ${name} in ${values.dir}` }));
      continue;
    }
    const t = process.hrtime.bigint();
    await job(input);
    console.log(String(Number(process.hrtime.bigint() - t) / 1e6));
  }
  process.exit(0);
}

const times = [];
const started = process.hrtime.bigint();
for (let r = 0; r < rounds; r++) {
  for (const input of photos) {
    const t = process.hrtime.bigint();
    await job(input);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
times.sort((a, b) => a - b);
console.log(
  JSON.stringify({
    images: times.length,
    seconds,
    images_per_second: times.length / seconds,
    median_ms: times[Math.floor(times.length / 2)],
    versions,
  }),
);
