// The lane map: one row per lane, one column per service; each cell says which version serves
// that lane there (own, fallback, strict 503, canary share) and its live request and error rate;
// a lane with a TTL (TrafficLane, `lanes ui --kube`) says when it expires.
import { count, errClass, h, live, pct, rate } from "./common.js";

// 5400 -> "1h 30m"; under a minute: seconds.
function duration(s) {
  if (s < 60) return Math.round(s) + "s";
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600),
    m = Math.floor((s % 3600) / 60);
  return [d && d + "d", hr && hr + "h", m && m + "m"].filter(Boolean).join(" ") || "0m";
}

function laneHead(lane) {
  const tags = [];
  if (lane.baseline) tags.push(h("span", { class: "tag base", text: "baseline" }));
  if (lane.strict) tags.push(h("span", { class: "tag strict", text: "strict" }));
  if (lane.fallback && !lane.baseline)
    tags.push(h("span", { class: "tag", text: "falls back to " + lane.fallback }));
  if (lane.expires_at)
    tags.push(h("span", { class: "tag ttl", title: "TrafficLane ttl: expires " + lane.expires_at,
      "data-expires-at": lane.expires_at, text: "expires in " + duration(lane.expires_in) }));
  const links = [h("a", { href: "/graph?lane=" + encodeURIComponent(lane.name), text: "graph" })];
  if (lane.trace_url) links.push(h("a", { href: lane.trace_url, class: "trace", text: "traces" }));
  return h("th", { scope: "row", class: "lane", "data-lane": lane.name },
    h("div", { class: "lane-name", text: lane.name }),
    h("div", { class: "tags" }, tags),
    lane.description ? h("div", { class: "desc", text: lane.description }) : null,
    h("div", { class: "links" }, links));
}

function cell(lane, service, c) {
  let kind, label;
  if (c.strict_miss) { kind = "miss"; label = "503 strict"; }
  else if (lane.baseline) { kind = "base"; label = c.serving; }
  else if (c.serving === lane.name) { kind = "own"; label = c.serving; }
  else if (c.fallback && c.serving !== lane.baseline_name) { kind = "fallback"; label = c.serving; }
  else { kind = "base"; label = c.serving; }
  const parts = [h("div", { class: "version " + kind, text: label })];
  if (kind === "fallback") parts.push(h("div", { class: "note", text: "via fallback" }));
  if (c.canary) {
    const all = Object.values(c.served_by).reduce((a, b) => a + b, 0);
    const now = all > 0 ? ` (now ${Math.round(100 * (c.served_by[c.canary.version] || 0) / all)}%)`
      : "";
    parts.push(h("div", { class: "note canary-note",
      text: `canary ${c.canary.version} · ${c.canary.weight}%${now}` }));
  }
  const fig = !c.total ? h("div", { class: "figures idle", text: "no traffic yet" })
    : h("div", { class: "figures" },
    h("span", { class: "rps", title: "requests per second", text: rate(c.rate) }),
    h("span", { class: "err " + errClass(c.error_ratio), title: "5xx share",
      text: pct(c.error_ratio) }),
    h("span", { class: "total", title: "requests counted", text: count(c.total) }));
  return h("td", { class: "cell " + kind, "data-lane": lane.name, "data-service": service,
    "data-serving": c.serving || "", "data-total": c.total, "data-rate": c.rate ?? "" },
    parts, fig);
}

function render(data) {
  const services = data.services;
  const head = h("tr", {}, h("th", { class: "corner", text: "lane \\ service" }),
    services.map((s) => h("th", { scope: "col", class: "service", text: s })));
  const rows = data.lanes.map((lane) => {
    lane.baseline_name = data.baseline;
    return h("tr", { "data-lane": lane.name }, laneHead(lane),
      services.map((s) => cell(lane, s, data.cells[lane.name][s])));
  });
  document.getElementById("map").replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
}

live(() => "/api/map", render);
