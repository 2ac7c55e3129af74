/**
 * Live presence over the /presence websocket.
 *
 * Connects, reports the server's messages to the callbacks, and reconnects
 * after a drop with exponential backoff (0.5 s doubling to 15 s, jittered so
 * a restarted server is not hit by every client at once). The callbacks run
 * again on every reconnection: `onWelcome` is where a page (re)announces what
 * it watches.
 *
 * It asks for changes (`?changes=1`): one whole presence first, then only
 * what changed, which it applies to its own copy, so `onPresence` still gets
 * the whole presence every time. At 1,000 viewers a whole presence is about
 * 90 KiB; a change is about 100 bytes.
 */

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

export function connectPresence({ onWelcome = () => {}, onPresence = () => {}, onState = showConnection } = {}) {
  const url = new URL("/presence?changes=1", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  let socket;
  let failures = 0;
  // Reconnections for a missed change since one last applied cleanly. They
  // count towards the backoff too: the welcome resets `failures`, and a
  // server that kept sending gaps must not be asked for a snapshot every 0.5 s.
  let resyncs = 0;

  function send(message) {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function open() {
    socket = new WebSocket(url);
    // This connection's copy of presence; null until its first snapshot.
    // Versions count per server process and a fresh connection may meet a
    // restarted one, so every connection starts over from a snapshot.
    let presence = null;
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
      } else if (message.type === "presence" && (presence === null || message.version > presence.version)) {
        // The first message, or a burst the server found shorter to send whole.
        presence = message.presence;
        onPresence(presence);
      } else if (message.type === "changes") {
        if (presence === null || message.from !== presence.version) {
          // Changes only rebuild the presence at version `from`; applied to
          // any other, they would show a wrong state. A fresh connection
          // starts from a snapshot; until it comes, the page keeps the last
          // right state it had.
          console.warn(`presence: missed changes (have ${presence?.version}, got from ${message.from}); reconnecting`);
          resyncs += 1;
          socket.close();
          return;
        }
        resyncs = 0;
        applyChanges(presence, message.changes);
        presence.version = message.version;
        onPresence(presence);
      } else if (message.type === "error") {
        console.warn("presence:", message.error);
      }
    });
    socket.addEventListener("close", () => {
      onState("reconnecting");
      const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (failures + resyncs));
      failures += 1;
      setTimeout(open, delay * (0.5 + Math.random() / 2));
    });
  }

  open();
  return { send };
}

/**
 * Applies `changes`, in order, to `presence` ({sockets: {id: ip}, videos: {id: [entry]}}), as the server does.
 *
 * Each change is a socket's whole new entry plus its `video` (null: none),
 * or `{socketId, gone: true}`. A socket that moves to another video goes to
 * the end of that video's list; one that only changes its peer keeps its
 * place, so the watcher lists come out in the server's order.
 */
function applyChanges({ sockets, videos }, changes) {
  for (const { video = null, gone = false, ...entry } of changes) {
    const id = entry.socketId;
    const had = Object.keys(videos).find((v) => videos[v].some((e) => e.socketId === id)) ?? null;
    const now = gone ? null : video;
    if (had !== null && had === now) {
      videos[had] = videos[had].map((e) => (e.socketId === id ? entry : e));
    } else {
      if (had !== null) {
        videos[had] = videos[had].filter((e) => e.socketId !== id);
        // Like the server's, the presence lists no video that nobody watches.
        if (videos[had].length === 0) delete videos[had];
      }
      if (now !== null) (videos[now] ??= []).push(entry);
    }
    if (gone) delete sockets[id];
    else sockets[id] = entry.ipaddress;
  }
}

/** Shows the connection's state in the page's header badge. */
export function showConnection(state) {
  const badge = document.querySelector("[data-connection]");
  if (!badge) return;
  badge.hidden = false;
  badge.dataset.state = state;
  badge.textContent = state === "live" ? "Live" : "Reconnecting…";
}
