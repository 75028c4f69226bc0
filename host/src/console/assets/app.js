// The imgfleet console: one page, no build step, no third-party code. Every action is a
// call of the public API (the same a client makes), with the credential from this tab's
// session storage.
"use strict";

const store = window.sessionStorage;
const $ = (id) => document.getElementById(id);
const PAGES = ["signin", "playground", "urls", "usage", "admin"];
const RESIZE_DEFAULTS = { fit: "inside", q: "80", speed: "8", enlarge: "0", fmt: "" };
// The canonical order of a signed URL's options (docs/DELIVERY.md, `params::PARAMETERS`).
const OPTION_ORDER = ["w", "h", "fit", "fmt", "q", "speed", "enlarge"];

let chosenFile = null;

function apiKey() { return store.getItem("imgfleet.apiKey") || ""; }
function adminToken() { return store.getItem("imgfleet.adminToken") || ""; }

function showError(message) { $("error").textContent = message || ""; }

// A failed call shows the API's own error code and message.
async function describeFailure(resp) {
  let text = `${resp.status}`;
  try {
    const body = await resp.json();
    if (body && body.error) text += ` ${body.error.code}: ${body.error.message}`;
  } catch (_) { /* not JSON: the status says it */ }
  return text;
}

async function call(path, credential, init = {}) {
  const headers = new Headers(init.headers || {});
  if (credential) headers.set("Authorization", `Bearer ${credential}`);
  const resp = await fetch(path, { ...init, headers });
  if (!resp.ok) throw new Error(await describeFailure(resp));
  return resp;
}

function formatBytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

function cell(row, text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  row.appendChild(td);
  return td;
}

function fillTable(table, columns, rows) {
  table.replaceChildren();
  const head = table.insertRow();
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c.title;
    head.appendChild(th);
  }
  for (const r of rows) {
    const tr = table.insertRow();
    for (const c of columns) {
      const value = c.value(r);
      const td = cell(tr, value === null || value === undefined ? "" : String(value), c.numeric);
      if (c.click) {
        td.className = "link";
        td.addEventListener("click", () => c.click(r));
      }
    }
  }
}

// ---- navigation ----

function route() {
  let page = (location.hash || "#").slice(1);
  if (!PAGES.includes(page)) page = apiKey() || adminToken() ? "playground" : "signin";
  for (const p of PAGES) $(p).hidden = p !== page;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  $("who").textContent = [apiKey() ? "API key set" : "", adminToken() ? "admin" : ""]
    .filter(Boolean).join(" · ") || "signed out";
  showError("");
  document.body.dataset.page = page;
  if (page === "usage" && apiKey()) loadUsage();
  if (page === "admin" && adminToken()) loadAdmin();
}

$("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const key = $("api-key").value.trim();
  const token = $("admin-token").value.trim();
  if (key) store.setItem("imgfleet.apiKey", key);
  if (token) store.setItem("imgfleet.adminToken", token);
  $("api-key").value = "";
  $("admin-token").value = "";
  location.hash = token && !key ? "#admin" : "#playground";
  route();
});

$("signout").addEventListener("click", () => {
  store.removeItem("imgfleet.apiKey");
  store.removeItem("imgfleet.adminToken");
  location.hash = "#signin";
  route();
});

// ---- playground ----

// Shows an image answer in the `<img>` with this id (decoded before it returns).
async function showImage(id, resp) {
  const blob = await resp.blob();
  const img = $(id);
  if (img.src) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  await img.decode();
  return { blob, img };
}

function chooseFile(file) {
  chosenFile = file;
  $("drop").textContent = `${file.name} (${formatBytes(file.size)})`;
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) chooseFile(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) chooseFile(e.dataTransfer.files[0]);
});

function queryOf(form, keepDefaults) {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData(form)) {
    if (!OPTION_ORDER.includes(k) || v === "") continue;
    if (!keepDefaults && RESIZE_DEFAULTS[k] === v) continue;
    q.append(k, v);
  }
  return q;
}

// `Server-Timing: auth;dur=0.1, wasm;dur=3.2, …` as rows of name and milliseconds.
function parseServerTiming(header) {
  if (!header) return [];
  return header.split(",").map((entry) => {
    const [name, ...params] = entry.trim().split(";");
    const dur = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    const desc = params.map((p) => p.trim()).find((p) => p.startsWith("desc="));
    return { name, ms: dur ? Number(dur.slice(4)) : null, desc: desc ? desc.slice(5) : "" };
  });
}

$("params").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError("");
  if (!apiKey()) return showError("sign in with an API key first");
  if (!chosenFile) return showError("choose an image first");
  const query = queryOf(e.target, false);
  try {
    const resp = await call(`/v1/resize?${query}`, apiKey(), {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: chosenFile,
    });
    const { blob, img } = await showImage("result-img", resp);
    $("result-facts").textContent =
      `${img.naturalWidth}×${img.naturalHeight} ${blob.type}, ${formatBytes(blob.size)} ` +
      `(from ${formatBytes(chosenFile.size)}) · request ${resp.headers.get("X-Request-Id") || ""}`;
    $("result-facts").dataset.bytes = String(blob.size);
    fillTable($("timing"), [
      { title: "Server-Timing", value: (t) => t.name },
      { title: "ms", value: (t) => (t.ms === null ? t.desc : t.ms.toFixed(2)), numeric: true },
    ], parseServerTiming(resp.headers.get("Server-Timing")));
  } catch (err) {
    showError(err.message);
  }
});

// ---- signed URLs ----

function base64url(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function hexBytes(hex) {
  if (!/^([0-9a-f]{2})+$/.test(hex)) throw new Error("the URL key's secret is not hex");
  return new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
}

// `ifu_<key id>_<secret hex>` → key id and secret, as `signed_url::parse_url_key` reads it.
function parseUrlKey(shown) {
  const parts = shown.trim().split("_");
  if (parts.length !== 3 || parts[0] !== "ifu") throw new Error("a URL key looks like ifu_<key id>_<secret>");
  return { keyId: parts[1], secret: hexBytes(parts[2]) };
}

async function signUrl(tenant, urlKey, origin, path, options) {
  const { keyId, secret } = parseUrlKey(urlKey);
  const source = path.replace(/^\/+/, "").split("/").map(encodeURIComponent).join("/");
  const lines = ["imgfleet-url-v1", tenant, keyId, options, origin, source];
  const message = new TextEncoder().encode(lines.map((l) => `${l}\n`).join(""));
  const key = await crypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, message);
  return `/v1/img/${tenant}/${keyId}-${base64url(mac)}/${options}/${origin}/${source}`;
}

$("url-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  showError("");
  const f = new FormData(e.target);
  const query = queryOf(e.target, false);
  const options = OPTION_ORDER.filter((k) => query.has(k)).map((k) => `${k}=${query.get(k)}`);
  const expires = f.get("expires");
  if (expires) options.push(`exp=${Math.floor(Date.now() / 1000) + Number(expires)}`);
  try {
    const url = await signUrl(f.get("tenant"), f.get("url_key"), f.get("origin"), f.get("path"), options.join(","));
    $("signed-url").textContent = location.origin + url;
    const resp = await call(url);
    const { blob, img } = await showImage("signed-img", resp);
    $("signed-facts").textContent =
      `${img.naturalWidth}×${img.naturalHeight} ${blob.type}, ${formatBytes(blob.size)} · ` +
      `ETag ${resp.headers.get("ETag") || "none"} · ${resp.headers.get("Cache-Control") || ""}`;
  } catch (err) {
    showError(err.message);
  }
});

// ---- usage ----

// One bar chart per series, in SVG: bars for the buckets, the maximum on the axis.
function barChart(title, unit, buckets, value, granularity) {
  const width = 360, height = 180, left = 46, bottom = 22, top = 8;
  const values = buckets.map(value);
  const max = Math.max(1, ...values);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const text = (x, y, s, anchor) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", y);
    if (anchor) t.setAttribute("text-anchor", anchor);
    t.textContent = s;
    svg.appendChild(t);
  };
  const plotW = width - left - 6, plotH = height - top - bottom;
  const step = plotW / Math.max(1, values.length);
  values.forEach((v, i) => {
    const h = (v / max) * plotH;
    const r = document.createElementNS(ns, "rect");
    r.setAttribute("class", "bar");
    r.setAttribute("x", (left + i * step + step * 0.1).toFixed(2));
    r.setAttribute("y", (top + plotH - h).toFixed(2));
    r.setAttribute("width", Math.max(1, step * 0.8).toFixed(2));
    r.setAttribute("height", h.toFixed(2));
    r.dataset.value = String(v);
    const tip = document.createElementNS(ns, "title");
    tip.textContent = `${new Date(buckets[i].start_ms).toISOString()}: ${v} ${unit}`;
    r.appendChild(tip);
    svg.appendChild(r);
  });
  text(left - 4, top + 8, String(Math.round(max * 100) / 100), "end");
  text(left - 4, top + plotH, "0", "end");
  if (buckets.length) {
    const fmt = (ms) => new Date(ms).toISOString().slice(granularity === "hour" ? 5 : 0, granularity === "hour" ? 13 : 10).replace("T", " ");
    text(left, height - 6, fmt(buckets[0].start_ms));
    text(width - 6, height - 6, fmt(buckets[buckets.length - 1].start_ms), "end");
  }
  const box = document.createElement("div");
  box.className = "chart";
  const h = document.createElement("h4");
  h.textContent = `${title} (${unit})`;
  box.append(h, svg);
  return box;
}

// The API lists only buckets with usage; a chart's time axis needs the empty ones too.
function withEmptyBuckets(report) {
  const size = report.granularity === "hour" ? 3600000 : 86400000;
  const byStart = new Map(report.buckets.map((b) => [b.start_ms, b]));
  const out = [];
  for (let t = report.from - (report.from % size); t < report.to; t += size) {
    out.push(byStart.get(t) || {
      start_ms: t, requests: 0, errors: 0, bytes_in: 0, bytes_out: 0, pixels_in: 0, pixels_out: 0, cpu_ms: 0,
    });
  }
  return out;
}

async function loadUsage() {
  showError("");
  const f = new FormData($("usage-form"));
  const granularity = f.get("granularity");
  const days = Number(f.get("days")) || 2;
  const now = Date.now();
  const from = now - days * 86400000;
  try {
    const resp = await call(`/v1/usage?granularity=${granularity}&from=${from}&to=${now + 1}`, apiKey());
    const report = await resp.json();
    const b = withEmptyBuckets(report);
    const sum = (k) => b.reduce((a, x) => a + x[k], 0);
    $("usage-total").textContent =
      `${report.tenant}: ${sum("requests")} requests (${sum("errors")} errors), ` +
      `${formatBytes(sum("bytes_in"))} in, ${formatBytes(sum("bytes_out"))} out, ` +
      `${sum("cpu_ms").toFixed(1)} ms CPU`;
    $("usage-total").dataset.requests = String(sum("requests"));
    $("charts").replaceChildren(
      barChart("Requests", "requests", b, (x) => x.requests, granularity),
      barChart("Bytes in", "bytes", b, (x) => x.bytes_in, granularity),
      barChart("Bytes out", "bytes", b, (x) => x.bytes_out, granularity),
      barChart("CPU", "ms", b, (x) => Math.round(x.cpu_ms * 100) / 100, granularity),
    );
  } catch (err) {
    showError(err.message);
  }
}

$("usage-form").addEventListener("submit", (e) => { e.preventDefault(); loadUsage(); });

// ---- admin ----

async function loadTenant(t) {
  const id = encodeURIComponent(t.id);
  try {
    const [keys, origins, urlKeys] = await Promise.all([
      call(`/admin/tenants/${id}/keys`, adminToken()).then((r) => r.json()),
      call(`/admin/tenants/${id}/origins`, adminToken()).then((r) => r.json()),
      call(`/admin/tenants/${id}/url-keys`, adminToken()).then((r) => r.json()),
    ]);
    const detail = $("tenant-detail");
    detail.replaceChildren();
    const section = (title, columns, rows) => {
      const h = document.createElement("h4");
      h.textContent = `${t.id}: ${title}`;
      const table = document.createElement("table");
      table.id = `tenant-${title.replace(/ /g, "-").toLowerCase()}`;
      fillTable(table, columns, rows);
      detail.append(h, table);
    };
    const when = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19);
    section("API keys", [
      { title: "key id", value: (k) => k.key_id },
      { title: "label", value: (k) => k.label },
      { title: "scopes", value: (k) => k.scopes.join(" ") },
      { title: "revoked", value: (k) => (k.revoked ? "yes" : "") },
      { title: "created", value: (k) => when(k.created_ms) },
    ], keys.keys);
    section("origins", [
      { title: "name", value: (o) => o.name },
      { title: "source", value: (o) => (o.source.type === "http" ? o.source.base_url : `s3://${o.source.bucket}/${o.source.prefix}`) },
      { title: "max-age", value: (o) => o.cache.max_age_secs, numeric: true },
      { title: "removed", value: (o) => (o.removed ? "yes" : "") },
    ], origins.origins);
    section("URL keys", [
      { title: "key id", value: (k) => k.key_id },
      { title: "label", value: (k) => k.label },
      { title: "revoked", value: (k) => (k.revoked ? "yes" : "") },
    ], urlKeys.url_keys);
  } catch (err) {
    showError(err.message);
  }
}

async function loadAdmin() {
  showError("");
  try {
    const [tenants, audit] = await Promise.all([
      call("/admin/tenants", adminToken()).then((r) => r.json()),
      // Oldest first from `from`: the last hour's, of which the newest are shown.
      call(`/admin/audit?from=${Date.now() - 3600000}&limit=10000`, adminToken()).then((r) => r.json()),
    ]);
    const limit = (v) => (v === null || v === undefined ? "∞" : v);
    fillTable($("tenants"), [
      { title: "tenant", value: (t) => t.id, click: loadTenant },
      { title: "disabled", value: (t) => (t.disabled ? "yes" : "") },
      { title: "req/s", value: (t) => limit(t.quota.requests_per_second), numeric: true },
      { title: "bytes/month", value: (t) => limit(t.quota.monthly_bytes), numeric: true },
      { title: "pixels/month", value: (t) => limit(t.quota.monthly_pixels), numeric: true },
    ], tenants.tenants);
    fillTable($("audit"), [
      { title: "time", value: (r) => new Date(r.at_ms).toISOString().replace("T", " ").slice(0, 23) },
      { title: "tenant", value: (r) => r.tenant },
      { title: "request", value: (r) => `${r.method} ${r.path}${r.query ? "?" + r.query : ""}` },
      { title: "status", value: (r) => r.status, numeric: true },
      { title: "code", value: (r) => r.code },
      { title: "in", value: (r) => r.input_bytes, numeric: true },
      { title: "out", value: (r) => r.output_bytes, numeric: true },
      { title: "ms", value: (r) => r.duration_ms.toFixed(1), numeric: true },
    ], audit.records.slice(-200).reverse());
  } catch (err) {
    showError(err.message);
  }
}

window.addEventListener("hashchange", route);
route();
