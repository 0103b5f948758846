// Small DOM helpers: elements, toasts, dialogs.
import { t } from "./i18n.js";

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== false && value != null) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

export function toast(message, kind = "info", ms = 6000) {
  const box = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  $("toasts").append(box);
  setTimeout(() => box.remove(), ms);
  while ($("toasts").children.length > 4) $("toasts").firstChild.remove();
}

// Open a <dialog> whose form submits through `submit(formData)`; a thrown error is shown in the dialog.
export function openForm(dialog, submit, reset = true) {
  const form = dialog.querySelector("form");
  const error = form.querySelector(".error");
  if (reset) form.reset();
  error.textContent = "";
  form.onsubmit = async (event) => {
    event.preventDefault();
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      await submit(new FormData(form));
      dialog.close();
    } catch (problem) {
      error.textContent = problem.message || t("error.unknown");
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  };
  for (const button of form.querySelectorAll("[data-close]")) button.onclick = () => dialog.close();
  dialog.showModal();
  form.querySelector("input:not([type=radio]), input")?.focus();
}
