// Message catalogue (inlined by the server in the chosen language) and locale-aware formatting via Intl.
const catalogue = JSON.parse(document.getElementById("catalogue").textContent);
export const lang = document.documentElement.dataset.lang;
export const locale = lang === "zh" ? "zh-CN" : "en";
const LANGUAGE_COOKIE = "edge_lang";

export function t(key, vars = {}) {
  const text = catalogue[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

const integer = new Intl.NumberFormat(locale, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(locale, { maximumFractionDigits: 3 });
const percent = new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 1 });
const clock = new Intl.DateTimeFormat(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const stamp = new Intl.DateTimeFormat(locale, { dateStyle: "short", timeStyle: "medium" });

export const fmtInt = (n) => (n == null ? "–" : integer.format(n));
export const fmtNumber = (n) => (n == null ? "–" : decimal.format(n));
export const fmtPercent = (n) => (n == null ? "–" : percent.format(n));
export const fmtTime = (iso) => (iso ? clock.format(new Date(iso)) : "");
export const fmtStamp = (iso) => (iso ? stamp.format(new Date(iso)) : "");

// The user's choice is remembered in a cookie (read by the server) and in localStorage.
export function chooseLanguage(code) {
  document.cookie = `${LANGUAGE_COOKIE}=${code}; path=/; max-age=31536000; samesite=strict`;
  try { localStorage.setItem(LANGUAGE_COOKIE, code); } catch { /* private mode */ }
  location.reload();
}

export function restoreLanguage() {
  let saved = null;
  try { saved = localStorage.getItem(LANGUAGE_COOKIE); } catch { /* private mode */ }
  if (saved && saved !== lang && !document.cookie.includes(`${LANGUAGE_COOKIE}=`)) chooseLanguage(saved);
}

export function wireLanguageButtons(root = document) {
  for (const button of root.querySelectorAll("button.lang")) {
    button.addEventListener("click", () => { if (button.dataset.lang !== lang) chooseLanguage(button.dataset.lang); });
  }
}
