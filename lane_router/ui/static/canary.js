// Canary releases: per service, the configured weight against the measured share, and the
// canary's error share and p99 next to the baseline's.
import { count, errClass, h, live, ms, pct, rate } from "./common.js";

function bar(label, value, kind) {
  const v = value === null || value === undefined ? null : Math.max(0, Math.min(100, value));
  return h("div", { class: "bar-row" },
    h("span", { class: "bar-label", text: label }),
    h("div", { class: "bar" }, h("div", { class: "fill " + kind,
      style: null, "data-width": v ?? 0 })),
    h("span", { class: "bar-value", text: v === null ? "–" : v.toFixed(1) + "%" }));
}

function side(name, f, cls) {
  return h("tr", { class: cls },
    h("th", { scope: "row", text: name }),
    h("td", { text: rate(f.rate) }),
    h("td", { class: "err " + errClass(f.error_ratio), text: pct(f.error_ratio, 2) }),
    h("td", { text: ms(f.p99) }),
    h("td", { text: count(f.total) }));
}

function card(c, baseline) {
  const shown = c.share ?? c.share_total;
  const worse = c.canary.error_ratio !== null && c.baseline.error_ratio !== null &&
    c.canary.error_ratio > c.baseline.error_ratio;
  const el = h("section", { class: "card", "data-service": c.service, "data-weight": c.weight,
    "data-share": shown ?? "" },
  h("h2", {}, c.service, " ", h("span", { class: "tag canary-tag", text: "canary " + c.version })),
  c.matches ? h("p", { class: "note",
    text: `${c.matches} content match${c.matches > 1 ? "es" : ""} send matching requests to the canary first` })
    : null,
  bar("configured weight", c.weight, "weight"),
  bar(c.share === null ? "measured share (all time)" : "measured share", shown, "share"),
  h("table", { class: "versus" },
    h("thead", {}, h("tr", {}, h("th", {}), h("th", { text: "rate" }), h("th", { text: "5xx" }),
      h("th", { text: "p99" }), h("th", { text: "requests" }))),
    h("tbody", {}, side(c.version + " (canary)", c.canary, "canary-row"),
      side(baseline, c.baseline, "baseline-row"))),
  worse ? h("p", { class: "problem", text: "the canary fails more often than the baseline" })
    : null);
  return el;
}

function render(data) {
  const root = document.getElementById("canaries");
  if (!data.canaries.length) {
    root.replaceChildren(h("p", { class: "empty",
      text: "No service has a canary. Declare one with: lanes canary SERVICE -f lanes.yaml --version V --weight N" }));
    return;
  }
  root.replaceChildren(...data.canaries.map((c) => card(c, data.baseline)));
  // Widths set through the CSSOM (allowed by the page's CSP, unlike inline style attributes).
  for (const f of root.querySelectorAll(".fill")) f.style.width = f.dataset.width + "%";
}

live(() => "/api/canary", render);
