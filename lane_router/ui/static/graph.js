// A lane's call graph: services as boxes in columns by call depth, calls as edges labelled
// with rate, error share and p99; the lane's own versions are highlighted.
import { count, errClass, h, live, ms, pct, rate } from "./common.js";

const W = 200, H = 74, COL = 370, ROW = 112, PAD = 28;

function laneFromUrl() {
  return new URLSearchParams(location.search).get("lane") || "";
}

function tabs(data) {
  const nav = document.getElementById("lanes");
  nav.replaceChildren(...data.lanes.map((l) =>
    h("a", { href: "/graph?lane=" + encodeURIComponent(l.name),
      class: "lane-tab" + (l.name === data.lane ? " active" : ""),
      "aria-current": l.name === data.lane ? "page" : null, text: l.name })));
}

// Rate, 5xx share and p99 once two samples exist; until then the count so far.
function figures(f, err) {
  if (!f.total) return "no traffic yet";
  if (f.rate === null) return `${count(f.total)} requests so far`;
  return `${rate(f.rate)} · ${pct(f.error_ratio)}${err} · p99 ${ms(f.p99)}`;
}

function place(nodes) {
  const cols = new Map();
  for (const n of nodes) {
    if (!cols.has(n.layer)) cols.set(n.layer, []);
    cols.get(n.layer).push(n);
  }
  const tallest = Math.max(...[...cols.values()].map((c) => c.length));
  const pos = new Map();
  for (const [layer, col] of cols) {
    const offset = ((tallest - col.length) * ROW) / 2;
    col.forEach((n, i) => pos.set(n.service, { x: PAD + layer * COL, y: PAD + offset + i * ROW }));
  }
  return { pos, width: PAD * 2 + (Math.max(...cols.keys()) * COL) + W,
    height: PAD * 2 + (tallest - 1) * ROW + H };
}

function nodeBox(n, p, lane) {
  let kind = "base", sub = "baseline";
  if (n.client) { kind = "client"; sub = "callers without --service"; }
  else if (n.strict_miss) { kind = "miss"; sub = "503: strict lane"; }
  else if (n.own) { kind = "own"; sub = "lane version: " + n.serving; }
  else if (n.fallback && n.serving !== lane.baseline) { kind = "fallback"; sub = "fallback: " + n.serving; }
  else sub = "version: " + n.serving;
  const g = h("g", { class: "node " + kind, transform: `translate(${p.x},${p.y})`,
    "data-service": n.service, "data-kind": kind, "data-serving": n.serving || "" },
  h("rect", { width: W, height: H, rx: 10 }),
  h("text", { x: 14, y: 24, class: "name", text: n.service }),
  h("text", { x: 14, y: 44, class: "sub", text: sub }));
  if (!n.client)
    g.append(h("text", { x: 14, y: 62, class: "figs" + (n.rate === null ? " idle" : ""),
      text: figures(n, " err") }));
  return g;
}

// An edge from a's right side to one port on b's left side. An edge that skips columns runs
// below the nodes of the columns it crosses (`floor`), so it never passes behind a box.
function edgePath(a, b, portY, floor) {
  const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = portY;
  const label = { lx: x2 - 12, ly: y2 - 6, anchor: "end" };
  if (x2 <= x1) { // same column or backwards: loop around below
    const ym = Math.max(a.y, b.y) + H + 24;
    return { d: `M${a.x + W / 2},${a.y + H} C${a.x + W / 2},${ym} ${b.x + W / 2},${ym} ${b.x + W / 2},${b.y + H}`,
      lx: (a.x + b.x) / 2 + W / 2, ly: ym + 14, anchor: "middle" };
  }
  if (floor !== null) {
    const g = COL - W, yf = floor;
    return { d: `M${x1},${y1} C${x1 + g / 2},${y1} ${x1 + g / 2},${yf} ${x1 + g},${yf} ` +
      `L${x2 - g},${yf} C${x2 - g / 2},${yf} ${x2 - g / 2},${y2} ${x2 - 2},${y2}`, ...label };
  }
  const mx = (x1 + x2) / 2;
  return { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 2},${y2}`, ...label };
}

function render(data) {
  tabs(data);
  const lane = data.lanes.find((l) => l.name === data.lane);
  document.getElementById("title").textContent = "Call graph of lane " + data.lane;
  const info = document.getElementById("lane-info");
  const bits = [lane.strict ? "strict: no fallback" : "walk: " + lane.chain.join(" → ")];
  if (lane.description) bits.push(lane.description);
  info.replaceChildren(h("span", { text: bits.join(" · ") }));
  if (data.trace_url)
    info.append(h("a", { href: data.trace_url, class: "trace", text: "spans of this lane" }));
  const { pos, width, height } = place(data.nodes);
  const svg = h("svg", { id: "graph-svg", viewBox: `0 0 ${width} ${height + 50}`,
    width, height: height + 50, role: "img", "aria-label": "call graph of lane " + data.lane },
  h("defs", {}, h("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 8, refY: 5,
    markerWidth: 11, markerHeight: 11, markerUnits: "userSpaceOnUse", orient: "auto" },
  h("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
  // Ports: the edges into one node enter at spread heights, ordered by their source's height.
  const incoming = new Map();
  for (const e of data.edges) {
    if (!pos.get(e.from) || !pos.get(e.to)) continue;
    if (!incoming.has(e.to)) incoming.set(e.to, []);
    incoming.get(e.to).push(e);
  }
  const port = new Map();
  for (const [to, list] of incoming) {
    list.sort((p, q) => pos.get(p.from).y - pos.get(q.from).y);
    const b = pos.get(to);
    list.forEach((e, i) => port.set(e, b.y + (H * (i + 1)) / (list.length + 1)));
  }
  let extra = 0;
  for (const e of data.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    let floor = null;
    if (b.x - a.x > COL) { // crosses columns: run below their lowest node
      const crossed = [...pos.values()].filter((p) => p.x > a.x && p.x < b.x);
      floor = Math.max(...crossed.map((p) => p.y + H)) + 20 + 10 * extra++;
    }
    const { d, lx, ly, anchor } = edgePath(a, b, port.get(e), floor);
    const width = 1.5 + Math.min(6, Math.log2(1 + (e.rate || 0)));
    svg.append(h("g", { class: "edge " + errClass(e.error_ratio), "data-from": e.from,
      "data-to": e.to, "data-total": e.total },
    h("path", { d, "stroke-width": width, "marker-end": "url(#arrow)" }),
    h("text", { x: lx, y: ly, "text-anchor": anchor || "middle", class: "edge-label",
      text: figures(e, "") })));
  }
  for (const n of data.nodes) svg.append(nodeBox(n, pos.get(n.service), { baseline: data.baseline }));
  // Shrinks to the page's width (never grows past its natural size); set through the CSSOM,
  // which the page's Content-Security-Policy allows (inline style attributes it does not).
  svg.setAttribute("width", "100%");
  svg.removeAttribute("height");
  svg.style.maxWidth = width + "px";
  document.getElementById("graph").replaceChildren(svg);
  const none = document.getElementById("no-traffic");
  none.hidden = data.edges.length > 0;
}

live(() => "/api/graph?lane=" + encodeURIComponent(laneFromUrl()), render);
