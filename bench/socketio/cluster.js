// server.js in N Node processes behind one port, as socket.io's docs run a
// Node cluster: @socket.io/sticky in this primary accepts the connections
// and hands each to a worker (the one with the fewest), and
// @socket.io/cluster-adapter's primary relays the workers' messages to each
// other.
//
//   node cluster.js --workers N --port P <server.js's other arguments>
"use strict";

const cluster = require("node:cluster");
const http = require("node:http");
const path = require("node:path");
const { parseArgs } = require("node:util");
const { setupMaster } = require("@socket.io/sticky");
const { setupPrimary } = require("@socket.io/cluster-adapter");

const { values: args } = parseArgs({
  options: { workers: { type: "string" }, port: { type: "string" } },
  strict: false,
});
const workers = Number(args.workers);
const forwarded = [];
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === "--workers") i++;
  else forwarded.push(process.argv[i]);
}

const httpServer = http.createServer();
setupMaster(httpServer, { loadBalancingMethod: "least-connection" });
setupPrimary();
// "advanced" (structured clone): the sticky primary sends the connections' first bytes as Buffers.
cluster.setupPrimary({ exec: path.join(__dirname, "server.js"), args: forwarded, serialization: "advanced" });

// The port opens once every worker can take connections, so that a
// connection to it means the whole cluster is up.
let ready = 0;
cluster.on("message", (worker, message) => {
  if (message === "ready" && ++ready === workers) {
    httpServer.listen(Number(args.port), "127.0.0.1", () =>
      console.log(`listening on 127.0.0.1:${args.port} with ${workers} workers`),
    );
  }
});
// A bench must not go on measuring half a cluster.
cluster.on("exit", (worker, code, signal) => {
  console.error(`worker ${worker.process.pid} exited (${signal ?? code})`);
  process.exit(1);
});
process.on("SIGTERM", () => {
  cluster.removeAllListeners("exit");
  for (const worker of Object.values(cluster.workers)) worker.kill();
  process.exit(0);
});
for (let i = 0; i < workers; i++) cluster.fork();
