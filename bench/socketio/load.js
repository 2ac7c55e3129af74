// The presence load for bench/presence_scale.py, one implementation for both
// servers so that they are measured alike.
//
//   node load.js --server binge|socketio --url ws://127.0.0.1:PORT --videos a,b
//                [--clients 1000] [--rates 10,20,50] [--step-seconds 3]
//                [--server-pid PID[,PID...]] [--query changes=1]
//
// Every client is a `ws` websocket. Binge+ clients speak its JSON messages on
// /presence; socket.io clients speak Engine.IO v4 / Socket.IO v5 over the
// websocket transport by hand (open, "40" connect, "42" events, ping/pong),
// which is what socket.io-client sends on that transport, minus its JSON
// parse of every packet: both kinds of client only scan the bytes they get.
// Before the load, one real socket.io-client watches a video and must see
// itself in presence: the server speaks socket.io as the original app did.
//
// The clients connect in batches, each watches a video, then one more
// client, the driver, makes changes: it watches with a peer URL ending in a
// counter, `http://127.0.0.1/mark-N`, a different one each change. A client
// has seen change N once a message carrying mark N or a later one reaches it
// (a coalesced broadcast carries only the latest). A change's latency is from
// the driver's send until the last client has seen it. The driver steps up
// through the rates; each step's p50, p99 and max latency, the rate it
// actually achieved and the CPU used go to stdout as one JSON line. The steps
// go on past one whose p99 is over --max-latency-ms (on a shared machine
// that may be a hiccup) and stop at one that is saturated: changes left
// unseen, or a p99 over five times that.
"use strict";

const fs = require("node:fs");
const { performance } = require("node:perf_hooks");
const { parseArgs } = require("node:util");
const WebSocket = require("ws");

const { values: args } = parseArgs({
  options: {
    server: { type: "string" },
    url: { type: "string" },
    videos: { type: "string" },
    clients: { type: "string", default: "1000" },
    rates: { type: "string", default: "10,20,50,100,200,500,1000,2000" },
    "step-seconds": { type: "string", default: "3" },
    "min-changes": { type: "string", default: "100" },
    "max-changes": { type: "string", default: "30000" },
    "max-latency-ms": { type: "string", default: "100" },
    "server-pid": { type: "string" },
    query: { type: "string", default: "" },
  },
});
const CLIENTS = Number(args.clients);
const VIDEOS = args.videos.split(",");
const BATCH = 100; // connections opened at once: the listen backlogs stay short
const SETTLE_MS = 120_000; // for the storm of joins to die down
const STEP_DEADLINE_MS = 5_000; // after a step's last send, for stragglers
// For one client's welcome: a connection the server lost (seen once in a
// socket.io cluster run) fails the run now, not at the bench's timeout.
const WELCOME_MS = 30_000;
const MARK = Buffer.from("127.0.0.1/mark-");

function output(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

/** The mark in a presence message, or -1; the last one when there are several. */
function markIn(data) {
  const at = data.lastIndexOf(MARK);
  if (at < 0) return -1;
  let n = 0;
  for (let i = at + MARK.length; i < data.length && data[i] >= 48 && data[i] <= 57; i++) n = n * 10 + data[i] - 48;
  return n;
}

// Per change: when the driver sent it, how many clients have seen it, when the last did.
const sentAt = [];
const seenBy = [];
const allSeenAt = [];
let waiter = null; // {mark, resolve}: resolved once every client has seen mark

class Tracker {
  constructor(counted) {
    this.counted = counted;
    this.seen = -1;
    this.bytes = 0;
    this.messages = 0;
    this.errors = 0;
  }

  presence(data) {
    this.bytes += data.length;
    this.messages += 1;
    const mark = markIn(data);
    if (!this.counted || mark <= this.seen) return;
    const now = performance.now();
    for (let m = this.seen + 1; m <= mark; m++) {
      seenBy[m] = (seenBy[m] ?? 0) + 1;
      if (seenBy[m] === CLIENTS) {
        allSeenAt[m] = now;
        if (waiter && m >= waiter.mark) waiter.resolve();
      }
    }
    this.seen = mark;
  }
}

/** A Binge+ presence websocket. */
class BingeClient extends Tracker {
  open(url) {
    return new Promise((resolve, reject) => {
      const query = args.query ? `?${args.query}` : "";
      this.ws = new WebSocket(`${url}/presence${query}`, { perMessageDeflate: false });
      this.ws.on("error", reject);
      this.ws.on("close", () => (this.closed = true));
      this.ws.on("message", (data) => {
        if (data[9] === 0x65 /* {"type":"e... */) {
          this.errors += 1;
        } else if (data[9] === 0x77 /* {"type":"w... */) {
          resolve();
        } else {
          this.presence(data);
        }
      });
    });
  }

  watch(video, peer) {
    this.ws.send(JSON.stringify(peer ? { type: "watch", video, peer } : { type: "watch", video }));
  }
}

/** A socket.io socket on the websocket transport, framed by hand. */
class SocketIoClient extends Tracker {
  open(url) {
    return new Promise((resolve, reject) => {
      const query = args.query ? `&${args.query}` : "";
      this.ws = new WebSocket(`${url}/socket.io/?EIO=4&transport=websocket${query}`, { perMessageDeflate: false });
      this.ws.on("error", reject);
      this.ws.on("close", () => (this.closed = true));
      this.ws.on("message", (data) => {
        const type = data[0];
        if (type === 0x30 /* 0: open */) {
          this.ws.send("40"); // connect to the main namespace
        } else if (type === 0x32 /* 2: ping */) {
          this.ws.send("3");
        } else if (type === 0x34 && data[1] === 0x32 /* 42: event */) {
          const name = data[4]; // 42["presence"... / 42["changes"... / 42["welcome"... / 42["error"...
          if (name === 0x70 || name === 0x63) this.presence(data);
          else if (name === 0x77) resolve();
          else if (name === 0x65) this.errors += 1;
        }
      });
    });
  }

  watch(video, peer) {
    this.ws.send("42" + JSON.stringify(["watch", peer ? { video, peer } : { video }]));
  }
}

const Client = { binge: BingeClient, socketio: SocketIoClient }[args.server];

/** Resolves once a socket.io-client has joined, watched and seen itself watching; rejects after 10 s. */
function checkWithSocketIoClient() {
  const { io } = require("socket.io-client");
  const socket = io(args.url.replace(/^ws/, "http"), { transports: ["websocket"], forceNew: true });
  return new Promise((resolve, reject) => {
    const timeout = setTimeout(() => reject(new Error("socket.io-client never saw itself watching")), 10_000);
    let id = null;
    socket.on("welcome", ({ socketId }) => {
      id = socketId;
      socket.emit("watch", { video: VIDEOS[0] });
    });
    socket.on("presence", ({ presence }) => {
      if ((presence.videos[VIDEOS[0]] ?? []).some((entry) => entry.socketId === id)) {
        clearTimeout(timeout);
        socket.disconnect();
        resolve();
      }
    });
  });
}

/** User and system CPU seconds of a server's processes (comma-separated pids: its workers too), from /proc. */
function cpuSeconds(pids) {
  let total = 0;
  for (const pid of pids.split(",")) {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    total += (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in USER_HZ ticks
  }
  return total;
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Opens `client`, rejecting if it is not welcomed within WELCOME_MS. */
function opened(client, url) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`a client had no welcome within ${WELCOME_MS} ms`)), WELCOME_MS);
  });
  return Promise.race([client.open(url), late]).finally(() => clearTimeout(timer));
}

/** Resolves true once every client has seen `mark`, false after `ms`. */
function allSeen(mark, ms) {
  if (seenBy[mark] === CLIENTS) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timeout = setTimeout(() => {
      waiter = null;
      resolve(false);
    }, ms);
    waiter = {
      mark,
      resolve: () => {
        clearTimeout(timeout);
        waiter = null;
        resolve(true);
      },
    };
  });
}

let nextMark = 0;

function change(driver) {
  const mark = nextMark++;
  sentAt[mark] = performance.now();
  driver.watch(VIDEOS[0], `http://127.0.0.1/mark-${mark}`);
  return mark;
}

/** Runs one rate; false once the server is saturated. */
async function step(driver, clients, rate) {
  const count = Math.min(
    Number(args["max-changes"]),
    Math.max(Number(args["min-changes"]), Math.round(rate * Number(args["step-seconds"]))),
  );
  const serverCpu = cpuSeconds(args["server-pid"]);
  const loadCpu = process.cpuUsage();
  const bytes = clients.reduce((sum, c) => sum + c.bytes, 0);
  const messages = clients.reduce((sum, c) => sum + c.messages, 0);
  const start = performance.now();
  let first, last;
  for (let k = 0; k < count; k++) {
    const wait = start + (k * 1000) / rate - performance.now();
    // Behind schedule, still let the clients' messages in between sends.
    await (wait >= 1 ? sleep(wait) : new Promise(setImmediate));
    last = change(driver);
    first ??= last;
  }
  const sendSeconds = (performance.now() - start) / 1000;
  const complete = await allSeen(last, STEP_DEADLINE_MS);
  const elapsed = (performance.now() - start) / 1000;
  const latencies = [];
  let unseen = 0;
  for (let m = first; m <= last; m++) {
    if (seenBy[m] === CLIENTS) latencies.push(allSeenAt[m] - sentAt[m]);
    else unseen += 1;
  }
  latencies.sort((a, b) => a - b);
  const loadUsed = process.cpuUsage(loadCpu);
  const received = clients.reduce((sum, c) => sum + c.messages, 0) - messages;
  const record = {
    event: "step",
    rate,
    changes: count,
    achievedRate: count / sendSeconds,
    p50: latencies.length ? percentile(latencies, 50) : null,
    p99: unseen ? null : percentile(latencies, 99),
    max: unseen ? null : latencies[latencies.length - 1],
    unseen,
    dropped: clients.filter((c) => c.closed).length,
    messagesPerClient: received / clients.length,
    bytesPerMessage: received ? (clients.reduce((sum, c) => sum + c.bytes, 0) - bytes) / received : 0,
    serverCpu: (cpuSeconds(args["server-pid"]) - serverCpu) / elapsed,
    loadCpu: (loadUsed.user + loadUsed.system) / 1e6 / elapsed,
  };
  output(record);
  return complete && record.p99 <= 5 * Number(args["max-latency-ms"]);
}

async function main() {
  if (args.server === "socketio") await checkWithSocketIoClient();
  const started = performance.now();
  const clients = [];
  for (let i = 0; i < CLIENTS; i += BATCH) {
    const batch = [];
    for (let j = i; j < Math.min(CLIENTS, i + BATCH); j++) {
      const client = new Client(true);
      clients.push(client);
      batch.push(opened(client, args.url).then(() => client.watch(VIDEOS[j % VIDEOS.length])));
    }
    await Promise.all(batch);
  }
  const driver = new Client(false);
  await opened(driver, args.url);
  const connected = performance.now();
  // The joins' broadcasts are over once every client has seen the first mark.
  if (!(await allSeen(change(driver), SETTLE_MS))) throw new Error("the clients never settled after joining");
  output({
    event: "connected",
    clients: CLIENTS,
    connectSeconds: (connected - started) / 1000,
    settleSeconds: (performance.now() - connected) / 1000,
    dropped: clients.filter((c) => c.closed).length,
  });
  for (const rate of args.rates.split(",").map(Number)) {
    if (!(await step(driver, clients, rate))) break;
  }
  const errors = clients.reduce((sum, c) => sum + c.errors, driver.errors);
  output({ event: "done", errors });
  for (const client of [...clients, driver]) client.ws.terminate();
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
