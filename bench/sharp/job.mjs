// The job both yardsticks run, the same as imgfleet's `w=<width>&fmt=<format>&q=<quality>`:
// auto-orient, resize to the width keeping the aspect ratio, never enlarge, embedded
// profiles applied (sharp's default), strip metadata, encode.
import sharp from "sharp";

export function resizeJob(input, { width, format, quality }) {
  const pipeline = sharp(input).rotate().resize({ width, withoutEnlargement: true });
  switch (format) {
    case "jpeg":
      return pipeline.jpeg({ quality }).toBuffer();
    case "webp":
      return pipeline.webp({ quality }).toBuffer();
    case "avif":
      return pipeline.avif({ quality }).toBuffer();
    case "png":
      return pipeline.png().toBuffer();
    default:
      throw new Error(`unknown format ${format}`);
  }
}
