// The maintenance workbench: samples to label, retraining with progress, the candidate compared with the
// running model (histograms, threshold slider), promote and roll back, camera set-up. Data and actions go
// through the API (maintenance scope); this page only shows them.
import { act, get, loadSession, login, logout, onSession } from "./api.js";
import { fmtInt, fmtNumber, fmtPercent, restoreLanguage, t, wireLanguageButtons } from "./i18n.js";
import { $, el, toast } from "./ui.js";

const MODEL = $("workbench").dataset.model;
const NS = "http://www.w3.org/2000/svg";
const PAGE = 48;
let before = null; // paging cursor of the sample grid
let job = null; // the newest training job
let polling = null;
let compared = null; // the comparison on screen
let cameraTimer = null;

const allowed = (current) => current?.kind === "user" && ["maintenance", "admin"].includes(current.role);

async function run(action, done) {
  try {
    const result = await action();
    if (done) toast(done, "ok");
    return result;
  } catch (problem) {
    if (problem.code !== "cancelled") toast(problem.message, "error");
    return null;
  }
}

// ---- samples ----------------------------------------------------------------------------------
function sampleCard(sample) {
  const input = el("input", { maxlength: 64, value: sample.label && sample.label !== "good" ? sample.label : "",
    "aria-label": t("workbench.defect_label") });
  const relabel = (label) => run(() => act("POST", `/api/v1/samples/${sample.id}`, { label }), t("workbench.labelled"))
    .then((changed) => changed && card.replaceWith(sampleCard(changed)));
  const exclude = () => run(() => act("POST", `/api/v1/samples/${sample.id}`, { excluded: !sample.excluded }),
    sample.excluded ? t("workbench.included") : t("workbench.excluded"))
    .then((changed) => changed && card.replaceWith(sampleCard(changed)));
  const image = sample.image_url ? el("img", { src: sample.image_url, alt: t("workbench.sample_image", { id: sample.id }),
    loading: "lazy" }) : el("p", { class: "muted" }, t("workbench.no_image"));
  const card = el("div", { class: "wb-card", dataset: { id: String(sample.id), state: sample.state } },
    image,
    el("div", { class: "wb-meta" },
      el("span", { class: "wb-tag" }, sample.label ?? t("workbench.unlabelled")), " · ",
      t(`workbench.origin_${sample.origin}`), " · ", t("workbench.score", { score: fmtNumber(sample.score) })),
    el("div", { class: "wb-actions" },
      el("button", { type: "button", class: "button small", "data-action": "good", onclick: () => relabel("good"),
        disabled: !sample.image_url }, t("workbench.mark_good")),
      input,
      el("button", { type: "button", class: "button small", "data-action": "defect",
        onclick: () => input.value.trim() ? relabel(input.value.trim()) : toast(t("workbench.label_needed"), "error"),
        disabled: !sample.image_url }, t("workbench.mark_defect")),
      el("button", { type: "button", class: "button small", "data-action": "exclude", onclick: exclude },
        sample.excluded ? t("workbench.include") : t("workbench.exclude"))));
  return card;
}

let loads = 0; // only the newest request fills the grid (a filter changed while one was on its way)

async function loadSamples(more = false) {
  const load = ++loads;
  if (!more) before = null;
  const query = new URLSearchParams({ limit: String(PAGE) });
  if ($("wb-state").value) query.set("state", $("wb-state").value);
  if ($("wb-label-filter").value.trim()) query.set("label", $("wb-label-filter").value.trim());
  if (before) query.set("before", String(before));
  const page = await run(() => get(`/api/v1/samples?${query}`));
  if (!page || load !== loads) return;
  const cards = page.samples.map(sampleCard);
  if (more) $("wb-grid").append(...cards); else $("wb-grid").replaceChildren(...cards);
  if (!page.samples.length && !more) $("wb-grid").append(el("p", { class: "muted" }, t("workbench.no_samples")));
  before = page.next_before;
  $("wb-more").hidden = !before;
  const usable = Object.entries(page.counts.usable).map(([label, n]) => `${label} ${fmtInt(n)}`).join(" · ");
  $("wb-counts").textContent = t("workbench.counts", { total: fmtInt(page.counts.total),
    unlabelled: fmtInt(page.counts.unlabelled), usable: usable || "–" });
}

// ---- retraining -------------------------------------------------------------------------------
function showJob(current) {
  job = current;
  const running = current && ["queued", "running"].includes(current.state);
  $("wb-start").disabled = running;
  $("wb-cancel").hidden = !running;
  $("wb-progress").hidden = !current;
  $("wb-progress").value = current?.fraction ?? 0;
  $("wb-job").dataset.state = current?.state ?? "";
  if (!current) { $("wb-job").textContent = t("workbench.no_job"); return; }
  const eta = current.eta_s != null ? t("workbench.eta", { seconds: fmtInt(current.eta_s) }) : "";
  const parts = [t(`workbench.job_${current.state}`, { id: current.id, version: current.candidate_version ?? "" }),
    running ? `${fmtPercent(current.fraction)} · ${current.stage ?? ""} ${eta}` : "", current.error ?? ""];
  $("wb-job").textContent = parts.filter(Boolean).join(" — ");
  if (running && !polling) polling = setInterval(refreshJob, 1000);
  if (!running && polling) { clearInterval(polling); polling = null; }
  if (current.state === "succeeded" && compared?.job_id !== current.id) { loadModels(); loadCompare(current.id); }
}

async function refreshJob() {
  const jobs = await run(() => get("/api/v1/training-jobs?limit=1"));
  if (jobs) showJob(jobs[0] ?? null);
}

async function startJob() {
  const started = await run(() => act("POST", "/api/v1/training-jobs", { model: MODEL, mode: $("wb-mode").value }),
    t("workbench.started"));
  if (started) showJob(started);
}

async function cancelJob() {
  if (!job) return;
  const stopped = await run(() => act("POST", `/api/v1/training-jobs/${job.id}/cancel`), t("workbench.cancelled"));
  if (stopped) showJob(stopped);
}

// ---- compare, threshold, promote --------------------------------------------------------------
function drawHistogram(root, version) {
  const h = version.histogram;
  const W = 400, H = 150, pad = 20;
  const counts = h.good.map((g, i) => g + h.defect[i]);
  const max = Math.max(1, ...counts);
  const low = h.edges[0], high = h.edges.at(-1);
  const x = (v) => pad + ((v - low) / (high - low || 1)) * (W - 2 * pad);
  const slot = (W - 2 * pad) / h.good.length;
  const nodes = [];
  h.good.forEach((good, i) => {
    const gh = (good / max) * (H - 2 * pad);
    const dh = (h.defect[i] / max) * (H - 2 * pad);
    nodes.push(svgNode("rect", { x: pad + i * slot, y: H - pad - gh, width: slot * 0.9, height: gh, class: "bar good" }));
    nodes.push(svgNode("rect", { x: pad + i * slot, y: H - pad - gh - dh, width: slot * 0.9, height: dh, class: "bar defect" }));
  });
  nodes.push(svgNode("line", { x1: x(h.threshold), x2: x(h.threshold), y1: pad / 2, y2: H - pad, class: "threshold" }));
  nodes.push(svgNode("text", { x: W / 2, y: 12, "text-anchor": "middle", class: "tick" },
    t("workbench.histogram_title", { version: version.version, threshold: fmtNumber(h.threshold) })));
  root.replaceChildren(...nodes);
}

function svgNode(tag, attrs, text = null) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text != null) node.textContent = text;
  return node;
}

function ratesAt(curve, threshold) {
  const point = curve.find((p) => p.threshold >= threshold);
  if (point) return point;
  const last = curve.at(-1) ?? {};
  return { false_reject_rate: last.false_reject_rate == null ? null : 0, miss_rate: last.miss_rate == null ? null : 1 };
}

function sliderValue() {
  const candidate = compared.versions[1];
  const values = candidate.curve.map((p) => p.threshold);
  const low = Math.min(...values), high = Math.max(...values);
  return low + (Number($("wb-threshold").value) / 1000) * (high - low);
}

function showSlider() {
  const candidate = compared.versions[1];
  const value = sliderValue();
  const rates = ratesAt(candidate.curve, value);
  $("wb-threshold-value").textContent = fmtNumber(value);
  $("wb-threshold-rates").textContent = t("workbench.rates", { false_rejects: fmtPercent(rates.false_reject_rate),
    misses: fmtPercent(rates.miss_rate) });
}

async function loadCompare(jobId) {
  if (compared?.job_id === jobId) return;
  $("wb-compare-empty").textContent = t("workbench.comparing");
  const report = await run(() => get(`/api/v1/training-jobs/${jobId}/compare`));
  if (!report) { $("wb-compare-empty").textContent = t("workbench.compare_none"); return; }
  compared = report;
  $("wb-compare-empty").hidden = true;
  $("wb-compare").hidden = false;
  $("wb-versions").replaceChildren(...report.versions.map((v, i) => el("tr", {},
    el("th", {}, t(i === 0 ? (report.candidate_running ? "workbench.previous" : "workbench.running")
      : "workbench.candidate", { version: v.version })),
    el("td", {}, fmtNumber(v.threshold)), el("td", {}, fmtPercent(v.false_reject_rate)),
    el("td", {}, fmtPercent(v.miss_rate)), el("td", {}, fmtNumber(v.auroc)),
    el("td", {}, Object.entries(v.misses_by_label).map(([label, n]) => `${label} ${fmtInt(n)}`).join(" · ") || "–"))));
  drawHistogram($("wb-hist-running"), report.versions[0]);
  drawHistogram($("wb-hist-candidate"), report.versions[1]);
  const candidate = report.versions[1];
  const values = candidate.curve.map((p) => p.threshold);
  const low = Math.min(...values), high = Math.max(...values);
  $("wb-threshold").value = String(Math.round(((candidate.threshold - low) / (high - low || 1)) * 1000));
  showSlider();
  $("wb-disagree").replaceChildren(...report.disagreements.map((d) => el("div", { class: "wb-card" },
    el("img", { src: `/api/v1/verdicts/${d.verdict_id}/image`, alt: t("workbench.part", { id: d.verdict_id }) }),
    el("div", { class: "wb-meta" }, t("workbench.disagree", { expected: t(`decision.${d.expected}`),
      running: t(`decision.${d.running}`), candidate: t(`decision.${d.candidate}`) })))));
  if (!report.disagreements.length) $("wb-disagree").append(el("p", { class: "muted" }, t("workbench.agree")));
  $("wb-promote").disabled = report.candidate_running;
  $("wb-promote").dataset.version = String(report.candidate_version);
}

async function setThreshold() {
  if (!compared) return;
  const result = await run(() => act("POST", `/api/v1/models/${MODEL}/threshold`,
    { version: compared.candidate_version, threshold: sliderValue(), job_id: compared.job_id }));
  if (!result) return;
  toast(t("workbench.threshold_set", { version: result.registered_version }), "ok");
  $("wb-promote").dataset.version = String(result.registered_version);
  showModels(result);
}

async function promote() {
  const version = Number($("wb-promote").dataset.version);
  const result = await run(() => act("POST", `/api/v1/models/${MODEL}/promote`, { version }),
    t("workbench.promoted", { version }));
  if (!result) return;
  showModels(result);
  $("wb-promote").disabled = true;
}

async function rollback() {
  const result = await run(() => act("POST", `/api/v1/models/${MODEL}/rollback`), t("workbench.rolled_back"));
  if (result) showModels(result);
}

function showModels(state) {
  $("wb-models").textContent = t("workbench.models", { model: state.model, running: state.running_version ?? "–",
    versions: state.versions.map((v) => v.version).join(", ") });
}

async function loadModels() {
  const state = await run(() => get(`/api/v1/models/${MODEL}/versions`));
  if (state) showModels(state);
}

// ---- camera -----------------------------------------------------------------------------------
async function refreshCamera() {
  const status = await run(() => get("/api/v1/camera"));
  if (!status) return;
  const ready = status.available && status.line_stopped;
  $("wb-camera-live").hidden = !ready;
  $("wb-camera-text").textContent = !status.available ? t("workbench.no_camera")
    : !status.line_stopped ? t("workbench.stop_line_first")
      : status.adjustable ? t("workbench.camera_name", { name: status.name }) : t("workbench.fixed_camera");
  $("wb-camera-apply").disabled = !status.adjustable;
  if (ready) {
    $("wb-preview").src = `/api/v1/camera/frame?at=${Date.now()}`;
    const check = status.last_frame;
    $("wb-sharpness").textContent = check ? fmtNumber(check.sharpness) : "–";
    $("wb-quality").textContent = check ? (check.problem ?? t("decision.OK")) : "–";
  }
  if (!cameraTimer) cameraTimer = setInterval(refreshCamera, ready ? 1500 : 5000);
}

async function applyCamera() {
  const body = {};
  if ($("wb-exposure").value) body.exposure_us = Number($("wb-exposure").value);
  if ($("wb-gain").value) body.gain_db = Number($("wb-gain").value);
  await run(() => act("POST", "/api/v1/camera/settings", body), t("workbench.camera_set"));
}

// ---- start ------------------------------------------------------------------------------------
function showAllowed(current) {
  const ok = allowed(current);
  $("workbench").hidden = !ok;
  $("wb-gate").hidden = ok;
  $("wb-gate-text").textContent = current?.kind === "user" ? t("workbench.wrong_role", { role: t(`role.${current.role}`) })
    : t("workbench.needs_role");
  $("who").textContent = current?.kind === "user" ? t("session.who", { user: current.user, role: t(`role.${current.role}`) }) : "";
  $("login-button").hidden = current?.kind === "user";
  $("logout-button").hidden = current?.kind !== "user";
  if (ok) { loadSamples(); refreshJob(); loadModels(); refreshCamera(); }
}

restoreLanguage();
wireLanguageButtons();
$("login-button").onclick = () => login().catch(() => {});
$("wb-login").onclick = () => login(t("workbench.needs_role")).catch(() => {});
$("logout-button").onclick = () => logout();
$("wb-refresh").onclick = () => loadSamples();
$("wb-state").onchange = () => loadSamples();
$("wb-more").onclick = () => loadSamples(true);
$("wb-start").onclick = startJob;
$("wb-cancel").onclick = cancelJob;
$("wb-threshold").oninput = () => compared && showSlider();
$("wb-set-threshold").onclick = setThreshold;
$("wb-promote").onclick = promote;
$("wb-rollback").onclick = rollback;
$("wb-camera-apply").onclick = applyCamera;
$("connection").hidden = true;
onSession(showAllowed);
loadSession();
