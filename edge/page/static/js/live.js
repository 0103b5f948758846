// The station's live events (server-sent events) with reconnection and catch-up: the stream is reopened
// from the last verdict id received, and the server replays every verdict stored since.
import { t } from "./i18n.js";
import { $ } from "./ui.js";

const RETRY_MS = [500, 1000, 2000, 4000];

export function connectEvents({ since = null, onVerdict, onRecord, onReady, onState, onError }) {
  let lastId = since; // null: start from what the station stores next (no replay of its history)
  let source = null;
  let attempt = 0;
  let received = 0;
  const state = (name) => {
    const box = $("connection");
    box.dataset.state = name;
    box.textContent = t(`connection.${name}`);
    onState?.(name);
  };

  function open() {
    state(attempt === 0 ? "connecting" : "reconnecting");
    source = new EventSource(lastId === null ? "/api/v1/events" : `/api/v1/events?since=${lastId}`);
    source.addEventListener("verdict", (event) => {
      const verdict = JSON.parse(event.data);
      if (lastId !== null && verdict.id <= lastId) return;
      lastId = verdict.id;
      received += 1; // what reached this page, shown to tests and kiosk checks as data attributes
      document.body.dataset.received = String(received);
      document.body.dataset.firstVerdict ??= String(verdict.id);
      onVerdict(verdict);
    });
    source.addEventListener("record", (event) => onRecord?.(JSON.parse(event.data)));
    source.addEventListener("ready", (event) => {
      const ready = JSON.parse(event.data);
      lastId = Math.max(lastId ?? 0, ready.cursor); // a reconnect resumes from here
      attempt = 0;
      state("live");
      onReady?.(ready);
    });
    source.onerror = () => {
      // Reopen ourselves (with the id in the URL), whatever EventSource would do: an HTTP error ends it.
      source.close();
      state(attempt === 0 ? "reconnecting" : "offline");
      onError?.(); // e.g. the session ended: the stream is refused until the next login
      setTimeout(open, RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
      attempt += 1;
    };
  }
  open();
  return { lastId: () => lastId, close: () => source?.close() };
}
