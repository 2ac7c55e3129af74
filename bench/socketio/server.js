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
//
// Run by cluster.js it is one worker of a Node cluster (see there): each
// worker keeps the whole picture; a change of one of its own sockets is
// applied here and sent to the other workers (serverSideEmit, through the
// cluster adapter), which apply it too; every worker broadcasts, coalesced
// as above, to its own sockets, so a client's versions come from the worker
// it is on and only ever grow. That is the shape of Binge+'s workers, each
// broadcasting the one picture to its own sockets.
"use strict";

const cluster = require("node:cluster");
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
  // io.local: this process's own sockets (in a cluster, each worker broadcasts to its own).
  if (diff.changes.length > sockets.size) {
    io.local.emit("presence", { version, presence: snapshot() });
  } else {
    io.local.except("followers").emit("presence", { version, presence: snapshot() });
    io.local.to("followers").emit("changes", diff);
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

/** Puts the socket in `next` (null: gone), keeping the watcher sets in step; false when nothing changes. */
function apply(id, next) {
  const old = sockets.get(id) ?? null;
  if (old && next && old.video === next.video && old.peer === next.peer) return false;
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
  return true;
}

/** A change of one of this process's own sockets: applied here and, in a cluster, on every other worker. */
function set(id, next) {
  if (apply(id, next) && cluster.isWorker) io.serverSideEmit("change", id, next);
}

const httpServer = http.createServer();
const io = new Server(httpServer, { serveClient: false });
if (cluster.isWorker) {
  const { setupWorker } = require("@socket.io/sticky");
  const { createAdapter } = require("@socket.io/cluster-adapter");
  io.adapter(createAdapter());
  setupWorker(io); // the primary hands this worker its connections
  io.on("change", apply); // a socket of another worker changed
  process.on("disconnect", () => process.exit(0)); // the primary is gone
}

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

if (cluster.isWorker) process.send("ready");
else httpServer.listen(Number(args.port), "127.0.0.1", () => console.log(`listening on 127.0.0.1:${args.port}`));
