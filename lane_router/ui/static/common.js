// Shared by the three pages: DOM building (text only, never innerHTML), number formats, and the
// fetch-render-refresh loop. Every page renders from its JSON endpoint and nothing else.

const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "path", "text", "line", "circle", "title", "defs", "marker",
    "tspan"].includes(tag);
  const el = svg ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function rate(v) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "0/s";
  if (v < 0.1) return v.toFixed(2) + "/s";
  if (v < 10) return v.toFixed(1) + "/s";
  return Math.round(v) + "/s";
}

export function pct(v, digits = 1) {
  if (v === null || v === undefined) return "–";
  return (100 * v).toFixed(digits) + "%";
}

export function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const m = seconds * 1000;
  return (m < 10 ? m.toFixed(1) : Math.round(m)) + " ms";
}

export function count(v) {
  if (v === null || v === undefined) return "–";
  return v >= 10000 ? (v / 1000).toFixed(1) + "k" : String(Math.round(v));
}

export function errClass(ratio) {
  if (ratio === null || ratio === undefined) return "";
  if (ratio >= 0.05) return "bad";
  if (ratio > 0) return "warn";
  return "ok";
}

function status(data, error) {
  const bar = document.getElementById("status");
  bar.replaceChildren();
  if (error) {
    bar.append(h("span", { class: "problem", text: "cannot load figures: " + error }));
    return;
  }
  const when = new Date(data.generated_at * 1000).toLocaleTimeString();
  bar.append(h("span", { text: `updated ${when} · ${data.origin} · every ${data.refresh} s` }));
  for (const p of data.problems) bar.append(h("span", { class: "problem", text: p }));
}

// Fetch `url` (a function giving it, so the query can change), render, schedule the next round.
export function live(url, render) {
  let timer = null;
  async function round() {
    clearTimeout(timer);
    let refresh = 5;
    try {
      const resp = await fetch(url(), { cache: "no-store" });
      const data = await resp.json();
      if (!resp.ok) throw new Error(data.error || resp.status);
      refresh = data.refresh;
      render(data);
      status(data, null);
      document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
    } catch (e) {
      status(null, String(e.message || e));
    }
    timer = setTimeout(round, Math.max(1, refresh) * 1000);
  }
  round();
  return round;
}
