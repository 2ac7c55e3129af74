// Binge+'s presence, served the way the original backend did it: socket.io,
// a full snapshot broadcast to every socket after changes.
//
//   node server.js --port N --videos a,b,c [--coalesce-ms 20]
//
// Semantics match presence/state.py and handlers/presence.py: a connection
// gets `welcome {socketId}` and joins presence watching nothing; `watch
// {video, peer?}` (a catalog video) and `leave` change only the socket's own
// entry; a change that changes nothing is silent; every change bumps the
// version; a disconnection removes the socket. After changes every socket
// gets `presence {version, presence: {version, sockets, videos}}`, the same
// JSON shape as Binge+'s. Broadcasts are coalesced as Binge+'s are: at
// least --coalesce-ms apart (default 20, like presence.coalesce_interval), a
// change going out on the event loop's next turn or once that interval since
// the last broadcast has passed, with the changes made meanwhile; with 0
// every change is broadcast at once. socket.io encodes a broadcast
// once and sends every socket the same pre-built websocket frame.
//
// A socket that connects with `?changes=1` gets, like Binge+'s, the snapshot
// first and then `changes {from, version, changes: [...]}` with every change
// since the previous broadcast in order (each the socket's entry plus its
// video, or `{socketId, gone: true}`); a burst of more changes than there
// are sockets goes out as a snapshot instead.
"use strict";

const http = require("node:http");
const { performance } = require("node:perf_hooks");
const { parseArgs } = require("node:util");
const { Server } = require("socket.io");

const { values: args } = parseArgs({
  options: {
    port: { type: "string" },
    videos: { type: "string" },
    "coalesce-ms": { type: "string", default: "20" },
  },
});
const catalog = new Set(args.videos.split(","));
const coalesceMs = Number(args["coalesce-ms"]);

// socket id -> {ip, video, peer}; video -> ordered set of its watchers' ids.
const sockets = new Map();
const watchers = new Map();
let version = 0;
let timer = null;
let lastBroadcast = -Infinity; // performance.now()
// Changes since the last broadcast, and the version it carried.
let changes = [];
let broadcastVersion = 0;
// Sockets that asked for changes; they join the "followers" room once they have had a snapshot.
const wanting = new Set();

function entry(id) {
  const { ip, peer } = sockets.get(id);
  return peer === null ? { ipaddress: ip, socketId: id } : { ipaddress: ip, socketId: id, peer };
}

function snapshot() {
  const videos = {};
  for (const [video, ids] of watchers) videos[video] = [...ids].map(entry);
  const ips = {};
  for (const [id, { ip }] of sockets) ips[id] = ip;
  return { version, sockets: ips, videos };
}

function broadcast() {
  timer = null;
  lastBroadcast = performance.now();
  const diff = { from: broadcastVersion, version, changes };
  changes = [];
  broadcastVersion = version;
  if (diff.changes.length > sockets.size) {
    io.emit("presence", { version, presence: snapshot() });
  } else {
    io.except("followers").emit("presence", { version, presence: snapshot() });
    io.to("followers").emit("changes", diff);
  }
  for (const socket of wanting) socket.join("followers");
  wanting.clear();
}

function change(id, next) {
  if (!next) return { socketId: id, gone: true };
  const entry = { socketId: id, ipaddress: next.ip, video: next.video };
  if (next.peer !== null) entry.peer = next.peer;
  return entry;
}

/** Puts the socket in `next` (null: gone), keeping the watcher sets in step; silent when nothing changes. */
function set(id, next) {
  const old = sockets.get(id) ?? null;
  if (old && next && old.video === next.video && old.peer === next.peer) return;
  if (old?.video !== next?.video) {
    if (old?.video) {
      const ids = watchers.get(old.video);
      ids.delete(id);
      if (ids.size === 0) watchers.delete(old.video);
    }
    if (next?.video) {
      if (!watchers.has(next.video)) watchers.set(next.video, new Set());
      watchers.get(next.video).add(id);
    }
  }
  if (next) sockets.set(id, next);
  else sockets.delete(id);
  version += 1;
  changes.push(change(id, next));
  if (coalesceMs === 0) broadcast();
  else timer ??= setTimeout(broadcast, Math.max(0, lastBroadcast + coalesceMs - performance.now()));
}

const httpServer = http.createServer();
const io = new Server(httpServer, { serveClient: false });

io.on("connection", (socket) => {
  const ip = socket.handshake.address;
  socket.emit("welcome", { socketId: socket.id });
  if (socket.handshake.query.changes === "1") wanting.add(socket);
  set(socket.id, { ip, video: null, peer: null });
  socket.on("watch", (msg) => {
    if (typeof msg?.video !== "string" || !catalog.has(msg.video)) {
      socket.emit("error", { error: `unknown video ${JSON.stringify(msg?.video)}` });
      return;
    }
    set(socket.id, { ip, video: msg.video, peer: typeof msg.peer === "string" ? msg.peer : null });
  });
  socket.on("leave", () => set(socket.id, { ip, video: null, peer: null }));
  socket.on("disconnect", () => {
    wanting.delete(socket);
    set(socket.id, null);
  });
});

httpServer.listen(Number(args.port), "127.0.0.1", () => console.log(`listening on 127.0.0.1:${args.port}`));
