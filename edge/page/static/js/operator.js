// The operator view: the latest part with its heat map and defect box, the verdict, batch counters,
// line and alarms, Pareto and control chart, recent NG parts; actions through the API.
import { act, ApiProblem, checkSession, ensureLogin, get, loadSession, login, logout, onSession } from "./api.js";
import { drawControl, drawPareto } from "./charts.js";
import { fmtInt, fmtNumber, fmtPercent, fmtStamp, restoreLanguage, t, wireLanguageButtons } from "./i18n.js";
import { connectEvents } from "./live.js";
import { $, el, openForm, toast } from "./ui.js";

const KEEP = 200; // verdicts kept in memory (the page must stay flat over a shift)
const STRIP = 12; // NG parts in the strip
const verdicts = new Map();
let shown = null; // the vision verdict on screen
let following = true; // show each new part; off while the operator looks at an older one
let summary = null;
let line = null;

const decisionOf = (v) => v.override_decision ?? v.decision;
const word = (decision) => t(`decision.${decision}`);

// ---- the part and its verdict ---------------------------------------------------------------
// A part's files are written just after its verdict is stored: a first miss is retried once.
function setImage(image, url) {
  image.dataset.retried = "";
  image.onerror = () => {
    if (image.dataset.retried) return;
    image.dataset.retried = "1";
    setTimeout(() => { image.src = `${url}?retry=1`; }, 400);
  };
  image.src = url;
}

function showPart(v) {
  shown = v;
  $("part-serial").textContent = t("operator.serial", { serial: v.serial });
  $("part-time").textContent = fmtStamp(v.created_at);
  $("part-score").textContent = fmtNumber(v.score);
  $("part-threshold").textContent = fmtNumber(v.threshold);
  $("part-model").textContent = v.model_name ? `${v.model_name} v${v.model_version}` : "–";
  const details = v.details ?? {};
  const view = $("part-view");
  if (details.width && details.height) view.style.aspectRatio = `${details.width} / ${details.height}`;
  const image = $("part-image");
  const heat = $("part-heatmap");
  image.hidden = !v.image_ref;
  if (v.image_ref) setImage(image, `/api/v1/verdicts/${v.id}/image`);
  heat.hidden = !v.heatmap_ref || !$("show-heatmap").checked;
  if (v.heatmap_ref) setImage(heat, `/api/v1/verdicts/${v.id}/heatmap`);
  const empty = $("part-empty");
  empty.hidden = Boolean(v.image_ref);
  empty.textContent = t("operator.no_image");
  const box = $("part-box");
  box.replaceChildren();
  const region = details.defect_region;
  if (region) {
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    for (const [k, val] of Object.entries({ x: region.x, y: region.y, width: region.w, height: region.h })) {
      rect.setAttribute(k, val);
    }
    rect.setAttribute("class", "box");
    box.append(rect);
  }
  const decision = decisionOf(v);
  $("verdict").dataset.decision = decision;
  $("verdict").dataset.id = String(v.id);
  $("verdict-word").textContent = word(decision);
  $("verdict-reason").textContent = decision === "INVALID" && v.reason ? t("operator.invalid_reason", { reason: v.reason })
    : v.label && decision === "NG" ? t("operator.label", { label: v.override_label ?? v.label }) : "";
  $("verdict-override").textContent = v.override_decision
    ? t("operator.overridden", { by: v.override_operator ?? "", decision: word(v.decision), reason: v.override_reason ?? "" })
    : "";
  $("confirm-button").disabled = false;
  $("override-button").disabled = false;
  $("follow-live").hidden = following;
}

function showAcoustic(v) {
  $("acoustic").hidden = false;
  const decision = decisionOf(v);
  $("acoustic-word").dataset.decision = decision;
  $("acoustic-word").textContent = word(decision);
  $("acoustic-reason").textContent = decision === "INVALID" && v.reason ? v.reason : fmtNumber(v.score);
}

function remember(v) {
  verdicts.set(v.id, v);
  if (verdicts.size > KEEP) verdicts.delete(verdicts.keys().next().value);
}

function thumbnail(v) {
  const image = el("img", { alt: v.serial, loading: "lazy" });
  setImage(image, `/api/v1/verdicts/${v.id}/image`);
  return image;
}

function renderStrip() {
  const ng = [...verdicts.values()].filter((v) => decisionOf(v) === "NG" && v.modality === "vision").slice(-STRIP).reverse();
  const strip = $("ng-strip");
  if (!ng.length) return strip.replaceChildren(el("span", { class: "muted" }, t("operator.no_ng")));
  strip.replaceChildren(...ng.map((v) => el("button", { type: "button", class: "thumb", dataset: { id: v.id },
    title: t("operator.open_part", { serial: v.serial }), onclick: () => { following = false; showPart(v); } },
  v.image_ref ? thumbnail(v) : null,
  el("span", {}, v.serial))));
}

function onVerdict(v) {
  remember(v);
  if (v.modality === "acoustic") showAcoustic(v);
  else if (following || shown?.id === v.id) showPart(v);
  document.body.dataset.lastVerdict = String(v.id);
  if (v.decision === "NG") renderStrip();
  refreshFiguresSoon();
}

function onChangedVerdict(v) {
  if (!v) return;
  remember(v);
  if (shown?.id === v.id) showPart(v);
  renderStrip();
}

// ---- figures, line, alarms ------------------------------------------------------------------
// Background reads say nothing of a lost connection (the banner does), a cancelled or pending login.
const worthSaying = (problem) => problem.code !== "connection" && problem.code !== "cancelled" && problem.status !== 401;

let figuresTimer = null;
function refreshFiguresSoon() {
  if (figuresTimer) return;
  figuresTimer = setTimeout(() => { figuresTimer = null; refreshFigures(); }, 500);
}

async function refreshFigures() {
  try {
    const [current, spc] = await Promise.all([get("/api/v1/summary/current"), get("/api/v1/spc?points=100")]);
    summary = current;
    $("count-parts").textContent = fmtInt(current.parts);
    $("count-ok").textContent = fmtInt(current.ok);
    $("count-ng").textContent = fmtInt(current.ng);
    $("count-invalid").textContent = fmtInt(current.invalid);
    $("count-yield").textContent = fmtPercent(current.yield);
    $("count-fpy").textContent = fmtPercent(current.first_pass_yield);
    const open = current.status === "open";
    $("batch-lot").textContent = open ? t("batch.open_lot", { lot: current.lot, product: current.product ?? "–" })
      : t("batch.window", { hours: fmtInt(current.window_hours) });
    $("batch-open-button").hidden = open;
    $("batch-close-button").hidden = !open;
    drawPareto($("pareto"), current.pareto);
    const charts = [...spc.scores].sort((a, b) => (b.points.at(-1)?.verdict_id ?? 0) - (a.points.at(-1)?.verdict_id ?? 0));
    drawControl($("control"), charts.find((c) => c.modality === "vision") ?? charts[0]);
  } catch (problem) {
    if (worthSaying(problem)) toast(problem.message, "error");
  }
}

async function refreshAlarms() {
  try {
    const alarms = await get("/api/v1/alarms?active_only=true&limit=20");
    const list = $("alarms");
    if (!alarms.length) return list.replaceChildren(el("li", { class: "muted" }, t("alarms.none")));
    list.replaceChildren(...alarms.map((a) => el("li", { class: `alarm ${a.severity}`, dataset: { id: a.id } },
      el("span", { class: "alarm-text" }, el("b", {}, t(`severity.${a.severity}`)), " ", a.message,
        el("small", {}, fmtStamp(a.raised_at))),
      a.acknowledged_at ? el("span", { class: "muted" }, t("alarms.acknowledged", { by: a.acknowledged_by ?? "" }))
        : el("button", { type: "button", class: "button ack", onclick: () => acknowledge(a) }, t("alarms.ack")))));
  } catch (problem) {
    if (worthSaying(problem)) toast(problem.message, "error");
  }
}

async function refreshLine() {
  try {
    line = await get("/api/v1/line");
  } catch (problem) {
    line = null;
    $("stack-light").dataset.light = "off";
    $("line-text").textContent = problem.status === 404 ? t("line.none") : problem.message;
    $("line-actions").hidden = true;
    $("recipe-row").hidden = true;
    return;
  }
  $("stack-light").dataset.light = line.stack_light ?? "off";
  $("line-text").textContent = line.line_stopped ? t("line.stopped") : t("line.running", { name: line.recipe.name });
  $("line-actions").hidden = false;
  $("line-stop-button").hidden = line.line_stopped;
  $("line-resume-button").hidden = !line.line_stopped;
  $("recipe-row").hidden = false;
  const select = $("recipe-select");
  if (!select.options.length) {
    const recipes = await get("/api/v1/line/recipes");
    select.replaceChildren(...recipes.map((r) => el("option", { value: r.number }, `${r.number} · ${r.name}`)));
  }
  if (document.activeElement !== select) select.value = String(line.recipe.number);
}

// ---- actions --------------------------------------------------------------------------------
async function run(action, success) {
  try {
    await action();
    if (success) toast(success, "ok");
  } catch (problem) {
    if (problem.code !== "cancelled") toast(problem.message ?? t("error.unknown"), "error");
  } finally {
    refreshFiguresSoon();
    refreshAlarms();
    if (line) refreshLine();
  }
}

// Another operator may have decided the part since this one looked: re-read it before acting (the API refuses
// a decision made meanwhile too: expected_override).
async function checkUnchanged(seen) {
  let fresh;
  try {
    fresh = await get(`/api/v1/verdicts/${seen.id}`);
  } catch (problem) {
    if (problem.status === 404) throw new ApiProblem(t("error.verdict_gone", { id: seen.id }), 404);
    if (problem.code === "connection") throw new ApiProblem(t("error.connection_not_done"), 0, "connection");
    throw problem;
  }
  if (fresh.override_at !== seen.override_at) {
    onChangedVerdict(fresh);
    throw new ApiProblem(t("error.decided_meanwhile", { by: fresh.override_operator ?? "", decision: word(decisionOf(fresh)) }), 409);
  }
}

function confirmShown() {
  const seen = shown;
  run(async () => {
    await checkUnchanged(seen);
    await act("POST", `/api/v1/verdicts/${seen.id}/override`, { decision: decisionOf(seen),
      expected_override: seen.override_id ?? 0 });
    onChangedVerdict(await get(`/api/v1/verdicts/${seen.id}`));
  }, t("action.confirmed"));
}

async function overrideShown() {
  const seen = shown;
  try { await ensureLogin(); } catch { return; }
  $("override-serial").textContent = seen.serial;
  openForm($("override-dialog"), async (data) => {
    await checkUnchanged(seen);
    await act("POST", `/api/v1/verdicts/${seen.id}/override`, { decision: data.get("decision"),
      reason: data.get("reason") || null, label: data.get("label") || null,
      expected_override: seen.override_id ?? 0 });
    onChangedVerdict(await get(`/api/v1/verdicts/${seen.id}`));
    toast(t("action.overridden"), "ok");
  });
}

function acknowledge(alarm) {
  run(() => act("POST", `/api/v1/alarms/${alarm.id}/ack`), t("alarms.acknowledged_toast"));
}

async function openBatch() {
  try { await ensureLogin(); } catch { return; }
  openForm($("batch-dialog"), async (data) => {
    await act("POST", "/api/v1/batches", { lot: data.get("lot"), product: data.get("product") || null,
      recipe: data.get("recipe") || null });
    toast(t("batch.started"), "ok");
    refreshFigures();
  });
}

function closeBatch() {
  if (!summary?.batch_id || !window.confirm(t("batch.close_confirm", { lot: summary.lot }))) return;
  run(() => act("POST", `/api/v1/batches/${summary.batch_id}/close`), t("batch.closed"));
}

// ---- start ----------------------------------------------------------------------------------
async function loadRecent(cursor) {
  const from = Math.max(0, cursor - 60);
  const page = await get(`/api/v1/verdicts?since=${from}&limit=60`);
  for (const v of page.items) if (v.id <= cursor && !verdicts.has(v.id)) onVerdict(v);
  renderStrip();
}

function wire() {
  restoreLanguage();
  wireLanguageButtons();
  $("login-button").onclick = () => login().catch(() => {});
  $("logout-button").onclick = () => logout();
  onSession((current) => {
    const user = current?.kind === "user";
    $("who").textContent = user ? t("session.who", { user: current.user, role: t(`role.${current.role}`) }) : "";
    $("login-button").hidden = user;
    $("logout-button").hidden = !user;
  });
  $("confirm-button").onclick = () => shown && confirmShown();
  $("override-button").onclick = () => shown && overrideShown();
  $("follow-live").onclick = () => {
    following = true;
    const latest = [...verdicts.values()].filter((v) => v.modality === "vision").at(-1);
    if (latest) showPart(latest);
  };
  $("show-heatmap").onchange = () => shown && showPart(shown);
  $("batch-open-button").onclick = openBatch;
  $("batch-close-button").onclick = closeBatch;
  $("line-stop-button").onclick = () => run(() => act("POST", "/api/v1/line/stop", { reason: null }), t("line.stopped"));
  $("line-resume-button").onclick = () => run(() => act("POST", "/api/v1/line/resume", { reason: null }), t("line.resumed"));
  $("recipe-select").onchange = (event) => run(() => act("POST", "/api/v1/line/recipe",
    { number: Number(event.target.value) }), t("line.recipe_selected"));
}

wire();
loadSession();
let first = true;
connectEvents({
  onVerdict,
  onRecord: (record) => {
    if (record.verdict) onChangedVerdict(record.verdict);
    if (record.kind === "alarm") refreshAlarms();
    if (record.kind === "batch" || record.kind === "override") refreshFiguresSoon();
  },
  onReady: ({ cursor }) => {
    // First connection: fill the view with the parts judged before; after a reconnect the server has
    // already replayed what was missed, and the figures, alarms and line are read again.
    if (first) { first = false; loadRecent(cursor).catch((p) => toast(p.message, "error")); }
    refreshFigures();
    refreshAlarms();
    refreshLine();
  },
  onState: (state) => { document.body.dataset.connection = state; },
  onError: checkSession,
});
setInterval(() => { if (line) refreshLine(); }, 2000);
