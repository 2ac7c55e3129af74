/**
 * Live presence over the /presence websocket.
 *
 * Connects, reports the server's messages to the callbacks, and reconnects
 * after a drop with exponential backoff (0.5 s doubling to 15 s, jittered so
 * a restarted server is not hit by every client at once). The callbacks run
 * again on every reconnection: `onWelcome` is where a page (re)announces what
 * it watches.
 */

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

export function connectPresence({ onWelcome = () => {}, onPresence = () => {}, onState = showConnection } = {}) {
  const url = new URL("/presence", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  let socket;
  let failures = 0;

  function send(message) {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function open() {
    socket = new WebSocket(url);
    // Versions count per server process; a fresh connection may meet a restarted one.
    let version = -1;
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "welcome") {
        failures = 0;
        onState("live");
        onWelcome(message.socketId, send);
      } else if (message.type === "presence" && message.version > version) {
        version = message.version;
        onPresence(message.presence);
      } else if (message.type === "error") {
        console.warn("presence:", message.error);
      }
    });
    socket.addEventListener("close", () => {
      onState("reconnecting");
      const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** failures);
      failures += 1;
      setTimeout(open, delay * (0.5 + Math.random() / 2));
    });
  }

  open();
  return { send };
}

/** Shows the connection's state in the page's header badge. */
export function showConnection(state) {
  const badge = document.querySelector("[data-connection]");
  if (!badge) return;
  badge.hidden = false;
  badge.dataset.state = state;
  badge.textContent = state === "live" ? "Live" : "Reconnecting…";
}
