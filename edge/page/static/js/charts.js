// Hand-written SVG charts: a Pareto of defect labels and a control chart of anomaly scores.
import { t, fmtInt, fmtNumber } from "./i18n.js";

const NS = "http://www.w3.org/2000/svg";
const W = 400;
const H = 150;
const PAD = { left: 34, right: 8, top: 10, bottom: 22 };

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text != null) node.textContent = text;
  return node;
}

function empty(root, message) {
  root.replaceChildren(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, message));
}

// pareto: [{label, count}] as the batch summary gives it (already ordered by count).
export function drawPareto(root, pareto) {
  const items = (pareto ?? []).slice(0, 8);
  if (!items.length) return empty(root, t("charts.no_defects"));
  const total = items.reduce((sum, item) => sum + item.count, 0);
  const max = Math.max(...items.map((item) => item.count));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / items.length;
  const nodes = [svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: "axis" })];
  let cumulative = 0;
  const line = [];
  items.forEach((item, i) => {
    const height = (item.count / max) * plotH;
    const x = PAD.left + i * slot + slot * 0.15;
    nodes.push(svg("rect", { x, y: H - PAD.bottom - height, width: slot * 0.7, height, class: "bar" }));
    nodes.push(svg("text", { x: x + slot * 0.35, y: H - PAD.bottom - height - 2, "text-anchor": "middle",
      class: "value" }, fmtInt(item.count)));
    nodes.push(svg("text", { x: x + slot * 0.35, y: H - 6, "text-anchor": "middle", class: "tick" }, item.label));
    cumulative += item.count;
    line.push(`${PAD.left + (i + 0.5) * slot},${PAD.top + plotH * (1 - cumulative / total)}`);
  });
  nodes.push(svg("polyline", { points: line.join(" "), class: "cumulative" }));
  root.replaceChildren(...nodes);
}

// chart: one ScoreChartOut of GET /api/v1/spc (points, limits, threshold).
export function drawControl(root, chart) {
  const points = chart?.points ?? [];
  if (!points.length) return empty(root, t("charts.no_scores"));
  const limits = chart.limits;
  const values = points.map((p) => p.score);
  const marks = [chart.threshold, limits?.ucl, limits?.lcl, limits?.center].filter((v) => v != null);
  let low = Math.min(...values, ...marks);
  let high = Math.max(...values, ...marks);
  if (high === low) { high += 1; low -= 1; }
  const margin = (high - low) * 0.08;
  low -= margin; high += margin;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (points.length === 1 ? plotW / 2 : (i / (points.length - 1)) * plotW);
  const y = (v) => PAD.top + (1 - (v - low) / (high - low)) * plotH;
  const nodes = [];
  const rule = (value, cls, label) => {
    if (value == null) return;
    nodes.push(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(value), y2: y(value), class: cls }));
    nodes.push(svg("text", { x: 2, y: y(value) + 3, class: `tick ${cls}` }, label));
  };
  rule(chart.threshold, "threshold", t("charts.threshold_short"));
  rule(limits?.ucl, "limit", t("charts.ucl"));
  rule(limits?.center, "center", t("charts.center"));
  rule(limits?.lcl, "limit", t("charts.lcl"));
  nodes.push(svg("polyline", { points: values.map((v, i) => `${x(i)},${y(v)}`).join(" "), class: "series" }));
  points.forEach((p, i) => {
    const broken = p.rules.length > 0;
    const dot = svg("circle", { cx: x(i), cy: y(p.score), r: broken ? 3.2 : 2,
      class: broken ? "point broken" : p.decision === "NG" ? "point ng" : "point" });
    dot.append(svg("title", {}, `${fmtNumber(p.score)}${broken ? " " + t("charts.rules", { rules: p.rules.join(",") }) : ""}`));
    nodes.push(dot);
  });
  root.replaceChildren(...nodes);
}
