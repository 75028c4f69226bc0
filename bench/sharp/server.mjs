// A minimal image service on sharp (libvips): the yardstick for the end-to-end benchmark.
// It only resizes: no keys, no queue, no audit, no metering.
//
//   node server.mjs            listens on 127.0.0.1 (a free port), prints {"port":N,"versions":{...}}
//
//   POST /resize?w=300&fmt=jpeg&q=80   body: the image; answers the resized image
//
// The job is `job.mjs`'s, as the resize benchmark's. One libvips thread and no operation
// cache, so its figure is per core.
import { createServer } from "node:http";
import sharp from "sharp";
import { resizeJob } from "./job.mjs";

sharp.concurrency(1);
sharp.cache(false);

function job(input, params) {
  return resizeJob(input, {
    width: Number(params.get("w") ?? "300"),
    format: params.get("fmt") ?? "jpeg",
    quality: Number(params.get("q") ?? "80"),
  });
}

const types = { jpeg: "image/jpeg", webp: "image/webp", avif: "image/avif", png: "image/png" };

const server = createServer((req, res) => {
  const url = new URL(req.url, "http://localhost");
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    if (req.method !== "POST" || url.pathname !== "/resize") {
      res.writeHead(404).end();
      return;
    }
    try {
      const out = await job(Buffer.concat(chunks), url.searchParams);
      res
        .writeHead(200, { "content-type": types[url.searchParams.get("fmt") ?? "jpeg"] })
        .end(out);
    } catch (e) {
      res.writeHead(400, { "content-type": "application/json" }).end(
        JSON.stringify({ error: String(e) }),
      );
    }
  });
});

server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  const versions = { sharp: sharp.versions.sharp, vips: sharp.versions.vips };
  console.log(JSON.stringify({ port: server.address().port, versions }));
});
