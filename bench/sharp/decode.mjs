// Decodes any image sharp reads (AVIF included) from stdin and writes it to stdout as
// PNG: the independent decoder the quality test checks AVIF output with.
import sharp from "sharp";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
process.stdout.write(await sharp(Buffer.concat(chunks)).png().toBuffer());
