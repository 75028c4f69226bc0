// Drives the web console in headless Chromium and prints what it saw, as JSON, for
// tests/e2e/console.rs to judge. Input: one JSON argument (base URL, credentials, the image
// to upload, the signed URL's parts, where to put screenshots). Every page's console
// messages of type error, uncaught exceptions and failed requests are reported.
import puppeteer from "puppeteer-core";

const input = JSON.parse(process.argv[2]);
const seen = { errors: [], pages: {} };

const browser = await puppeteer.launch({
  executablePath: input.chromium,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", `--user-data-dir=${input.profile}`],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  page.on("console", (m) => { if (m.type() === "error") seen.errors.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => seen.errors.push(`exception: ${e.message}`));
  page.on("requestfailed", (r) => seen.errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => {
    // Every call the console makes in this walk is expected to succeed.
    if (r.status() >= 400) seen.errors.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  const shot = async (name) => {
    const path = `${input.out_dir}/${name}.png`;
    await page.screenshot({ path, fullPage: true });
    return path;
  };
  const text = (sel) => page.$eval(sel, (e) => e.textContent);

  // Sign in: both credentials, kept in the tab's session storage only.
  await page.goto(`${input.base}/console`, { waitUntil: "networkidle0" });
  seen.pages.signin = { screenshot: await shot("signin"), title: await page.title() };
  await page.type("#api-key", input.api_key);
  await page.type("#admin-token", input.admin_token);
  await page.click("#signin-form button[type=submit]");
  await page.waitForFunction(() => document.body.dataset.page === "playground");
  seen.local_storage_keys = await page.evaluate(() => Object.keys(localStorage));
  seen.cookies = (await page.cookies()).length;

  // Playground: upload, resize, read the result and its Server-Timing.
  const chooser = await page.$("#file");
  await chooser.uploadFile(input.image_path);
  await page.$eval("#params input[name=w]", (e) => { e.value = ""; });
  await page.type("#params input[name=w]", String(input.width));
  await page.select("#params select[name=fmt]", "png");
  await page.click("#resize");
  await page.waitForFunction(() => document.getElementById("result-facts").textContent.length > 0, { timeout: 30000 });
  seen.pages.playground = {
    facts: await text("#result-facts"),
    natural: await page.$eval("#result-img", (i) => [i.naturalWidth, i.naturalHeight]),
    bytes: Number(await page.$eval("#result-facts", (e) => e.dataset.bytes)),
    timing: await page.$$eval("#timing tr", (rows) => rows.slice(1).map((r) => [...r.cells].map((c) => c.textContent))),
    screenshot: await shot("playground"),
  };

  // Signed URL builder: signed in the page, loaded from the host.
  await page.goto(`${input.base}/console#urls`, { waitUntil: "networkidle0" });
  await page.type("#url-form input[name=tenant]", input.tenant);
  await page.type("#url-form input[name=url_key]", input.url_key);
  await page.type("#url-form input[name=origin]", input.origin);
  await page.type("#url-form input[name=path]", input.source_path);
  await page.$eval("#url-form input[name=w]", (e) => { e.value = ""; });
  await page.type("#url-form input[name=w]", String(input.signed_width));
  await page.select("#url-form select[name=fmt]", "webp");
  await page.click("#sign");
  await page.waitForFunction(() => document.getElementById("signed-facts").textContent.length > 0, { timeout: 30000 });
  seen.pages.urls = {
    url: await text("#signed-url"),
    facts: await text("#signed-facts"),
    natural: await page.$eval("#signed-img", (i) => [i.naturalWidth, i.naturalHeight]),
    screenshot: await shot("urls"),
  };

  // Usage: charts from /v1/usage (the test waits for the usage to be folded first).
  await page.goto(`${input.base}/console#usage`, { waitUntil: "networkidle0" });
  await page.waitForSelector("#charts svg");
  seen.pages.usage = {
    total: await text("#usage-total"),
    requests: Number(await page.$eval("#usage-total", (e) => e.dataset.requests)),
    charts: await page.$$eval(".chart", (charts) => charts.map((c) => ({
      title: c.querySelector("h4").textContent,
      bars: [...c.querySelectorAll("rect.bar")].map((r) => Number(r.dataset.value)),
      drawn: [...c.querySelectorAll("rect.bar")].filter((r) => Number(r.getAttribute("height")) > 0).length,
    }))),
    screenshot: await shot("usage"),
  };

  // Admin: tenants, one tenant's keys and origins, the audit log.
  await page.goto(`${input.base}/console#admin`, { waitUntil: "networkidle0" });
  await page.waitForFunction(() => document.querySelectorAll("#tenants tr").length > 1);
  await page.evaluate((tenant) => {
    const cell = [...document.querySelectorAll("#tenants td")].find((td) => td.textContent === tenant);
    cell.click();
  }, input.tenant);
  await page.waitForSelector("#tenant-origins");
  seen.pages.admin = {
    tenants: await page.$$eval("#tenants tr", (rows) => rows.slice(1).map((r) => r.cells[0].textContent)),
    keys: await page.$$eval("#tenant-api-keys tr", (rows) => rows.length - 1),
    origins: await page.$$eval("#tenant-origins tr", (rows) => rows.slice(1).map((r) => r.cells[0].textContent)),
    audit: await page.$$eval("#audit tr", (rows) => rows.slice(1).map((r) => [r.cells[2].textContent, r.cells[3].textContent])),
    screenshot: await shot("admin"),
  };

  // Signing out forgets both credentials.
  await page.click("#nav a[data-page=playground]");
  await page.goto(`${input.base}/console#signin`, { waitUntil: "networkidle0" });
  await page.click("#signout");
  seen.session_after_signout = await page.evaluate(() => Object.keys(sessionStorage));
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(seen));
