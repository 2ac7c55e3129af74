/**
 * The peer-node panel: where this video's bytes came from (peers, this node's
 * local store, the origin), as running totals polled from
 * GET /videos/{id}/sources, and how this node reaches each peer: over HTTP,
 * over a direct data channel (through the NATs, or on a LAN), or over one
 * relayed by a TURN server. An origin server has no such endpoint and answers
 * 404, which hides the panel for good; other failures keep the last figures
 * and try again.
 */
import { formatBytes } from "./format.js";

const POLL_MS = 1000;
const HIDDEN_TAB_POLL_MS = 5000;
const KINDS = ["peers", "local", "origin"];
const ROUTES = { http: "HTTP", "direct-channel": "direct channel", "relayed-channel": "relayed channel" };

export function followSources(videoId, panel) {
  const url = `/videos/${encodeURIComponent(videoId)}/sources`;

  async function poll() {
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (response.status === 404) {
        panel.hidden = true;
        return;
      }
      if (response.ok) render(panel, await response.json());
    } catch {
      // A network blip: the next poll will tell.
    }
    setTimeout(poll, document.hidden ? HIDDEN_TAB_POLL_MS : POLL_MS);
  }

  poll();
}

function render(panel, counts) {
  const bytes = Object.fromEntries(KINDS.map((kind) => [kind, Math.max(0, Number(counts[kind]) || 0)]));
  const total = KINDS.reduce((sum, kind) => sum + bytes[kind], 0);
  for (const kind of KINDS) {
    panel.querySelector(`[data-source="${kind}"]`).textContent = formatBytes(bytes[kind]);
    panel.querySelector(`[data-bar="${kind}"]`).style.flexGrow = total ? bytes[kind] / total : 0;
  }
  panel.querySelector("[data-source-total]").textContent = formatBytes(total);
  const share = total ? Math.round((100 * (bytes.peers + bytes.local)) / total) : 0;
  panel.querySelector("[data-sources-headline]").textContent =
    total ? `${share}% served without the origin` : "Nothing downloaded yet";
  const routes = Object.entries(counts.reached || {}).filter(([, route]) => route in ROUTES);
  panel.querySelector("[data-sources-peers]").replaceChildren(...routes.map(([url, route]) => {
    const item = document.createElement("li");
    item.textContent = `${url.replace(/^https?:\/\//, "")}: ${ROUTES[route]}`;
    item.dataset.route = route;
    return item;
  }));
  panel.hidden = false;
}
