// Creates the page's node in window.T and joins args.room of args.url.
for (let i = 0; i < 400 && !window.n2nReady; i++) {
  if (window.n2nLoadError) throw new Error(window.n2nLoadError);
  await new Promise((r) => setTimeout(r, 25));
}
if (!window.n2nReady) throw new Error("the wasm package did not load");
N2nNode.setLogLevel(args.log || "info");
// A media permission (fake devices) lets Chromium offer its loopback
// host candidate as an address rather than only an mDNS name.
const media = await navigator.mediaDevices.getUserMedia({ audio: true });
media.getTracks().forEach((t) => t.stop());
const enc = new TextEncoder(), dec = new TextDecoder();
const node = new N2nNode(N2nNode.generateKey(), args.opts);
const T = (window.T = { node, msgs: [], waiters: [], connected: {}, lost: [], stopped: Infinity });
node.onEvent((e) => {
  if (e.type === "connected") T.connected[e.peer] = performance.now();
  if (e.type === "disconnected") T.lost.push(e.peer);
  if (e.type !== "message") return;
  const t = dec.decode(e.data.subarray(0, 64));
  if (t.startsWith("ping ")) {
    node.send(e.from, "chat", enc.encode("pong " + dec.decode(e.data).slice(5))).catch(() => {});
  } else if (!t.startsWith("bulk")) {
    const m = { from: e.from, t: dec.decode(e.data) };
    T.waiters = T.waiters.filter((w) => !w.match(m));
  }
});
T.expect = (peer, text, ms) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no " + JSON.stringify(text) + " from " + peer.slice(0, 8))), ms);
    T.waiters.push({ match: (m) => (m.from === peer && m.t === text ? (clearTimeout(timer), resolve(), true) : false) });
  });
T.ping = async (peer, tag, ms = 20000) => {
  const pong = T.expect(peer, "pong " + tag, ms);
  await node.send(peer, "chat", enc.encode("ping " + tag));
  await pong;
};
T.rtt = async (peer, n) => {
  const r = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await T.ping(peer, "r" + i);
    r.push(performance.now() - t);
  }
  r.sort((a, b) => a - b);
  return { median: r[r.length >> 1], min: r[0] };
};
T.bulk = async (peer, size, count) => {
  const chunk = new Uint8Array(size);
  chunk.set(enc.encode("bulk"));
  const t = performance.now();
  for (let i = 0; i < count; i++) await node.send(peer, "chat", chunk);
  await T.ping(peer, "end", 60000);
  return { ms: performance.now() - t };
};
const t0 = performance.now();
const contact = await node.join(args.url, args.room);
return { id: node.peerId, contact, joined_ms: performance.now() - t0 };
