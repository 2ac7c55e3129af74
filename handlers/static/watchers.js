/** The "Watching now" list: one row per socket watching this video, this tab's own marked "You". */

/** A short, stable tag telling apart viewers who share an address. */
function tag(socketId) {
  let hash = 0;
  for (const char of socketId) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return { name: hash.toString(36).slice(-4).toUpperCase().padStart(4, "0"), hue: hash % 8 };
}

export function renderWatchers(list, counter, watchers, mySocketId) {
  // Yourself first, then everyone else in the order they arrived.
  const sorted = [...watchers].sort((a, b) => (b.socketId === mySocketId) - (a.socketId === mySocketId));
  const rows = sorted.map(({ socketId, ipaddress }) => {
    const me = socketId === mySocketId;
    const { name, hue } = tag(socketId);
    const row = document.createElement("li");
    row.className = me ? "watcher me" : "watcher";
    row.dataset.socketId = socketId;
    const avatar = document.createElement("span");
    avatar.className = `avatar hue-${hue}`;
    avatar.setAttribute("aria-hidden", "true");
    avatar.textContent = me ? "★" : name[0];
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = me ? "You" : `Viewer ${name}`;
    const where = document.createElement("span");
    where.className = "where";
    where.textContent = ipaddress;
    row.append(avatar, who, where);
    return row;
  });
  if (rows.length === 0) {
    const note = document.createElement("li");
    note.className = "watchers-note";
    note.textContent = "Nobody else is here yet.";
    rows.push(note);
  }
  list.replaceChildren(...rows);
  counter.textContent = watchers.length;
}
